// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/* sockdata: TCP payloads from syscall tracepoints.
 *
 * For every read/write-family syscall on a TCP socket (IPv4/IPv6) this emits one
 * EVENT_SOCK_DATA record with the first max_capture_bytes of the payload, the
 * syscall's return length and the connection's 4-tuple. accept/accept4/connect
 * and close emit connection records. Works without kprobes: only
 * syscalls/sys_{enter,exit}_* and sock/inet_sock_set_state tracepoints.
 *
 * The socket behind an fd is found by walking current->files->fdt at syscall
 * exit, so connections opened before the agent started are recognised too.
 *
 * Cost (see benchmarks/bench_bpf.py; a helper call is ~30 ns on the reference
 * VM, an LRU hash insert ~170 ns): the entry programs only stamp a per-thread
 * slot; the exit programs stop after the fd's struct file for anything that is
 * not a socket, and find a socket's tuple and filter verdicts in `sock_cache`
 * after three reads, so the full walk (~12 reads) runs once per socket.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "../include/sizing.h"
#include "sockdata.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3

/* ---- knobs, set by user space before load ---- */
const volatile __u32 targ_self_tgid = 0;          /* the agent: never traced */
const volatile __u32 max_capture_bytes = 4096;    /* <= MAX_CAPTURE_BYTES */
const volatile __u64 wakeup_bytes = 256 * 1024;   /* force a reader wakeup past this backlog */
/* 1: the entry programs of reads (sys_enter_read, recvfrom, readv, recvmsg,
 * recvmmsg) are attached and ts_enter of ingress records is the entry time.
 * 0 (default): they are not, ingress records carry ts_enter == ts_exit (user
 * space orders and times reads by their exit), and the exit takes the
 * arguments from the saved user registers: one program run (~100 ns) less per
 * read of any process. User space sets 1 on kernels without bpf_task_pt_regs. */
const volatile __u8 ingress_enter = 0;

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* resized by user space before load */
} events SEC(".maps");

/* Kind of buffer argument of a data syscall. */
enum buf_kind { BUF_PLAIN = 0, BUF_IOV = 1, BUF_MMSG = 2 };

/* A data syscall between entry and exit: what the exit needs from the entry.
 * Every entry of a data syscall stamps its thread's slot, traced or not: the
 * decision is taken at exit, where it is needed only for calls that moved
 * bytes. An array slot is reached without a helper call, where an LRU hash
 * insert and delete per call cost ~350 ns on the reference VM. */
struct call_slot {
	__u64 id;       /* pid_tgid of the thread in the call; 0: free */
	__u64 ts_enter;
	__u64 buf;      /* buffer, iovec or mmsghdr array, or user_msghdr (recvmsg/sendmsg) */
	__s32 fd;
	__u32 vlen;     /* iovec or mmsghdr count */
	__u8 syscall;
	__u8 _pad[7];
};

/* Indexed by thread id modulo MAX_CALL_SLOTS. A slot taken over by another
 * thread (or never stamped: a call already blocked when the probes were
 * attached) makes the exit rebuild the call from the saved user registers
 * (rebuild_call); only the entry time is then unknown. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CALL_SLOTS);
	__type(key, __u32);
	__type(value, struct call_slot);
} calls SEC(".maps");

/* A data call at exit, from its slot or rebuilt. */
struct data_call {
	__u64 ts_enter; /* 0: unknown (the exit time is used) */
	__u64 buf;
	__s32 fd;
	__u32 vlen;
};

/* What is known about the socket behind an open struct file: the fd walk past
 * the struct file, the 4-tuple and the filter verdicts, computed once. */
struct sock_entry {
	__u64 ino;        /* the socket inode's number: a struct file reused for another socket differs */
	__u64 sock_id;    /* struct sock address */
	struct conn_tuple tuple;
	__u32 filter_gen; /* filter_config.generation `port_ok` was decided at */
	__u32 self_gen;   /* self_gen `far_end` was decided at */
	__u8 proto;       /* IPPROTO_TCP, or IPPROTO_UDP (DNS) */
	__u8 role;
	__u8 port_ok;     /* the port filter lets it through */
	__u8 far_end;     /* the far end of one of the agent's connections */
	__u8 h2;          /* walk its payloads for HTTP/2 frames: not known yet, or frames seen */
	__u8 verdicts;    /* port_ok and far_end were decided once */
	__u8 _pad[2];
};

/* Keyed by struct file address, checked against the inode number: a freed
 * struct file is soon reused (same address) for another socket, but never with
 * the same inode number. Only connected TCP sockets are cached (a UDP socket
 * may connect elsewhere; connect/accept refresh a TCP socket's entry). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CACHED_SOCKS);
	__type(key, __u64);
	__type(value, struct sock_entry);
} sock_cache SEC(".maps");

/* Bumped when the agent's own connections (self_conns) change: cached far-end
 * verdicts are then redone. */
__u32 self_gen = 0;

/* The f_op of socket files (socket_file_ops), learnt from the first TCP socket
 * resolved in full: any other f_op is not a socket, told without reading the inode. */
__u64 sock_fops = 0;

/* fd of an accept/connect in flight, keyed by pid_tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_ACTIVE_CALLS);
	__type(key, __u64);
	__type(value, __s32);
} pending_connect SEC(".maps");

/* Role of sockets seen connecting, accepted, or reaching ESTABLISHED. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_TRACKED_SOCKS);
	__type(key, __u64); /* struct sock address */
	__type(value, __u8);
} sock_role SEC(".maps");

/* The agent's own connections, keyed by their 4-tuple as the agent sees it.
 * A connection whose mirrored tuple is here is the far end of one of ours
 * (e.g. the collector reading our exports) and is not traced. The full tuple,
 * not just the port: an ephemeral port the agent used is soon reused by
 * unrelated connections. Entries go at the agent's close(); LRU as a backstop. */
struct self_key {
	__u8 local[16];
	__u8 remote[16];
	__u16 lport;
	__u16 rport;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_SELF_CONNS);
	__type(key, struct self_key);
	__type(value, __u8);
} self_conns SEC(".maps");

/* HTTP/2 framing of one direction of a connection, carried from one syscall
 * to the next (see h2_walk). */
struct h2_key {
	__u64 sock_id;
	__u32 direction;
	__u32 _pad;
};

struct h2_state {
	__u32 skip; /* bytes of the current frame still to come */
	__u8 keep;  /* the current frame is not DATA: its bytes are forwarded */
	__u8 have;  /* bytes of a split frame header already seen (in hdr) */
	__u8 hdr[9];
	__u8 _pad[1];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_TRACKED_SOCKS);
	__type(key, struct h2_key);
	__type(value, struct h2_state);
} h2_frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_config);
} filter_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FILTER_PIDS);
	__type(key, __u32);
	__type(value, __u8);
} filter_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FILTER_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} filter_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Scratch space to build a variable-size data record: header + up to
 * 2 * MAX_CAPTURE_BYTES so that `offset < MAX` plus `size < MAX` always fits,
 * which is the bound the verifier can check for the iovec copy loop. */
struct h2_walk_ctx {
	__u64 buf;      /* plain buffer, or iovec array when vlen > 0 */
	__u32 vlen;
	__u32 len;      /* payload bytes moved by the syscall */
	__u32 captured; /* head bytes in s->buf */
	__u32 off;      /* payload offset of the next frame header */
	__u32 ext;      /* next free byte of s->buf for segments */
	__u32 seg_pos;  /* s->buf position of the open segment's header (0: none) */
	__u32 seg_end;  /* payload offset where the open segment ends */
	__u32 copy_a;   /* payload [copy_a, copy_b) is being copied into the open segment */
	__u32 copy_b;
	__u32 frames;
	__u8 strict;    /* not known as HTTP/2 yet: only known frame types */
	__u8 failed;
	__u8 stored;    /* frame state may be kept for the connection after the walk */
	/* iovec cursor: entry iov_idx spans payload [iov_start, iov_start + iov_len) */
	__u32 iov_idx;
	__u32 iov_start;
	__u32 iov_len;
	__u64 iov_base;
	/* framing at the end of the payload, carried to the next syscall */
	__u32 skip;
	__u8 keep;
	__u8 have;
	__u8 hdr[9];
};

struct data_scratch {
	struct sock_data_event hdr;
	__u8 buf[2 * MAX_CAPTURE_BYTES];
	/* The HTTP/2 frame walk's state (see h2_walk). In map memory, not on the
	 * stack: the verifier then does not track its values from one bpf_loop
	 * iteration to the next, and checks the callback once. */
	struct h2_walk_ctx walk;
	/* A socket that is not cached (UDP DNS) is described here for the current call. */
	struct sock_entry tmp;
};

/* One slot per CPU, indexed by the current CPU: a per-CPU array cannot hold
 * values over 32 KiB. Tracing programs do not nest on one CPU (bpf_prog_active),
 * so a slot is never used twice at once. User space sizes it to the CPU count. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct data_scratch);
} scratch SEC(".maps");

/* Force BTF emission of the records decoded by user space. */
const struct sock_data_event *_unused_sock_data_event __attribute__((unused));
const struct conn_event *_unused_conn_event __attribute__((unused));
const struct data_segment *_unused_data_segment __attribute__((unused));
const enum event_type *_unused_event_type __attribute__((unused));
const enum stat_index *_unused_stat_index __attribute__((unused));
const enum syscall_id *_unused_syscall_id __attribute__((unused));
const enum direction *_unused_direction __attribute__((unused));
const enum conn_role *_unused_conn_role __attribute__((unused));

/* ---- helpers ---- */

/* `v & (2 * MAX_CAPTURE_BYTES - 1)` done in asm so that clang cannot drop it:
 * the value is already below MAX_CAPTURE_BYTES, so clang proves the mask
 * useless, but the verifier tracks ranges less precisely across the copy
 * loops and needs the mask to see that a size stays inside the scratch buffer. */
static __always_inline __u64 verifier_bound(__u64 v)
{
	asm volatile("%[v] &= %[m]" : [v] "+r"(v) : [m] "i"(2 * MAX_CAPTURE_BYTES - 1));
	return v;
}

/* The same for sizes up to 15 bytes (a frame header). */
static __always_inline __u64 small_bound(__u64 v)
{
	asm volatile("%[v] &= 15" : [v] "+r"(v));
	return v;
}

#include "../include/record_helpers.bpf.h"

/* A record the ring refused. Since Linux 6.15 a reservation takes a resilient spinlock that can
 * give up (time-out, deadlock detection) rather than spin, so a record can be refused while the
 * ring has room: those are counted apart, to tell a slow reader from a refused reservation. */
static __always_inline void count_lost(__u64 size)
{
	__u64 ring = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	__u64 used = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	stat_add(STAT_LOST, 1);
	if (used + ((size + 8 + 7) & ~7ULL) <= ring) /* as the kernel sizes it: 8-byte header, 8-aligned */
		stat_add(STAT_LOST_WITH_ROOM, 1);
}

#define SOCK_DGRAM 2
#define IPPROTO_UDP 17
#define DNS_PORT 53

/* fd -> struct file in the current task, or 0. */
static __always_inline __u64 fd_file(__s32 fd)
{
	struct file **fds;
	__u64 file = 0;
	__u32 max_fds;

	if (fd < 0)
		return 0;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)) {
		/* A BTF-typed task (5.11+): the task -> files -> fdt links are plain
		 * loads (guarded against faults by the JIT), not one helper call each. */
		struct task_struct *task = bpf_get_current_task_btf();
		struct files_struct *files = task->files;
		struct fdtable *fdt;

		if (!files)
			return 0;
		fdt = files->fdt;
		if (!fdt)
			return 0;
		max_fds = fdt->max_fds;
		fds = fdt->fd;
	} else {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);

		if (!fdt)
			return 0;
		max_fds = BPF_CORE_READ(fdt, max_fds);
		fds = BPF_CORE_READ(fdt, fd);
	}
	if ((__u32)fd >= max_fds)
		return 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return 0;
	return file;
}

/* f_op, private_data and f_inode of a struct file: one read of its first 64
 * bytes where CO-RE places them there (every kernel since 4.x), else three. */
static __always_inline void read_file_head(__u64 file, __u64 *fops, __u64 *priv, __u64 *inode)
{
	__u64 head[8];
	__u32 o_fops = bpf_core_field_offset(struct file, f_op);
	__u32 o_priv = bpf_core_field_offset(struct file, private_data);
	__u32 o_inode = bpf_core_field_offset(struct file, f_inode);

	/* The offsets are constants once relocated: the verifier keeps one branch. */
	if (o_fops <= sizeof(head) - 8 && o_priv <= sizeof(head) - 8 && o_inode <= sizeof(head) - 8 &&
	    !(o_fops & 7) && !(o_priv & 7) && !(o_inode & 7)) {
		if (bpf_probe_read_kernel(head, sizeof(head), (void *)file)) {
			*fops = *priv = *inode = 0;
			return;
		}
		*fops = head[o_fops / 8];
		*priv = head[o_priv / 8];
		*inode = head[o_inode / 8];
	} else {
		struct file *f = (struct file *)file;

		*fops = (__u64)BPF_CORE_READ(f, f_op);
		*priv = (__u64)BPF_CORE_READ(f, private_data);
		*inode = (__u64)BPF_CORE_READ(f, f_inode);
	}
}

/* i_mode and i_ino of an inode: one read of its first 80 bytes where they lie
 * there, else two. 0 on failure. */
static __always_inline int read_inode(__u64 inode, __u16 *mode, __u64 *ino)
{
	__u64 head[10];
	__u32 o_mode = bpf_core_field_offset(struct inode, i_mode);
	__u32 o_ino = bpf_core_field_offset(struct inode, i_ino);

	if (!inode)
		return 0;
	if (o_mode <= sizeof(head) - 2 && o_ino <= sizeof(head) - 8 && !(o_mode & 1) && !(o_ino & 7)) {
		if (bpf_probe_read_kernel(head, sizeof(head), (void *)inode))
			return 0;
		*mode = *(__u16 *)((__u8 *)head + o_mode);
		*ino = head[o_ino / 8];
	} else {
		struct inode *i = (struct inode *)inode;

		*mode = BPF_CORE_READ(i, i_mode);
		*ino = BPF_CORE_READ(i, i_ino);
	}
	return 1;
}

/* socket -> struct sock of a TCP socket (IPv4/IPv6), or NULL. With `dns`, also a
 * connected UDP socket whose local or remote port is 53 (what glibc's resolver
 * uses). *never is set when the socket can never be traced, whatever it later
 * connects to (a unix, netlink or raw socket): its verdict can be cached. */
static __always_inline struct sock *socket_sock(struct socket *sock, int dns, int *never)
{
	struct sock *sk;
	__u16 family, type, proto;

	*never = 0;
	if (!sock)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	type = BPF_CORE_READ(sk, sk_type);
	proto = BPF_CORE_READ(sk, sk_protocol);
	if (family != AF_INET && family != AF_INET6) {
		*never = 1;
		return NULL;
	}
	if (type == SOCK_STREAM && proto == IPPROTO_TCP)
		return sk;
	if (!(type == SOCK_DGRAM && proto == IPPROTO_UDP)) {
		*never = 1;
		return NULL;
	}
	if (dns && type == SOCK_DGRAM && proto == IPPROTO_UDP &&
	    (BPF_CORE_READ(sk, __sk_common.skc_dport) == __builtin_bswap16(DNS_PORT) ||
	     BPF_CORE_READ(sk, __sk_common.skc_num) == DNS_PORT))
		return sk;
	return NULL;
}

/* fd -> struct sock of a TCP socket, walked in full (connection lifecycle and
 * the agent's own calls; the data path goes through lookup_sock). Cheap for
 * non-socket fds: they stop at the inode mode check. */
static __always_inline struct sock *fd_to_tcp_sock(__s32 fd)
{
	__u64 file = fd_file(fd), fops, priv, inode, ino;
	__u16 mode;
	int never;

	if (!file)
		return NULL;
	read_file_head(file, &fops, &priv, &inode);
	if (!read_inode(inode, &mode, &ino) || (mode & S_IFMT) != S_IFSOCK)
		return NULL;
	return socket_sock((struct socket *)priv, 0, &never);
}

static __always_inline void read_tuple(struct sock *sk, struct conn_tuple *t)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	t->family = family;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__u32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(t->saddr, &s, 4);
		__builtin_memcpy(t->daddr, &d, 4);
	} else {
		BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8); /* &: sizeof(*dst) must be 16 */
		BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline __u8 lookup_role(__u64 sock_id)
{
	__u8 *r = bpf_map_lookup_elem(&sock_role, &sock_id);
	return r ? *r : ROLE_UNKNOWN;
}

static __always_inline struct filter_config *get_filter_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&filter_cfg, &zero);
}

/* 1 when the process may be traced under the run-time pid filter. */
static __always_inline int pid_allowed_by(const struct filter_config *cfg, __u32 tgid)
{
	if (!cfg || !cfg->pid_filter)
		return 1;
	return bpf_map_lookup_elem(&filter_pids, &tgid) != NULL;
}

static __always_inline int pid_allowed(__u32 tgid)
{
	return pid_allowed_by(get_filter_cfg(), tgid);
}

static __always_inline int ports_allowed(const struct filter_config *cfg, const struct conn_tuple *t)
{
	if (!cfg || !cfg->port_filter)
		return 1;
	return bpf_map_lookup_elem(&filter_ports, &t->sport) || bpf_map_lookup_elem(&filter_ports, &t->dport);
}

/* 1 when `t` (seen by another process) is the far end of one of the agent's connections. */
static __always_inline int is_far_end_of_self(const struct conn_tuple *t)
{
	struct self_key k = {};

	__builtin_memcpy(k.local, t->daddr, 16);
	__builtin_memcpy(k.remote, t->saddr, 16);
	k.lport = t->dport;
	k.rport = t->sport;
	return bpf_map_lookup_elem(&self_conns, &k) != NULL;
}

/* The agent's own sockets are never traced; their tuples are remembered so that
 * the far end of them is not traced either. `closing` forgets the tuple. */
static __always_inline int is_self(__u32 tgid, __s32 fd, int closing)
{
	struct conn_tuple t = {};
	struct self_key k = {};
	struct sock *sk;
	__u8 one = 1;

	if (tgid != targ_self_tgid)
		return 0;
	stat_add(STAT_SELF_SKIPPED, 1);
	sk = fd_to_tcp_sock(fd);
	if (!sk)
		return 1;
	read_tuple(sk, &t);
	if (!t.sport || !t.dport)
		return 1; /* not connected yet: recorded at the next call */
	__builtin_memcpy(k.local, t.saddr, 16);
	__builtin_memcpy(k.remote, t.daddr, 16);
	k.lport = t.sport;
	k.rport = t.dport;
	if (closing) {
		if (!bpf_map_delete_elem(&self_conns, &k))
			__sync_fetch_and_add(&self_gen, 1);
	} else if (!bpf_map_update_elem(&self_conns, &k, &one, BPF_NOEXIST)) {
		__sync_fetch_and_add(&self_gen, 1); /* a new connection of ours: far-end verdicts are redone */
	}
	return 1;
}

/* Resolve the socket behind struct file `file` in full and describe it in
 * sock_cache (connected TCP) or in this CPU's scratch entry (UDP DNS, or a TCP
 * socket not connected yet). NULL when it is not a traced kind of socket; one
 * that never can be (unix sockets, everywhere) is cached as such (proto 0). */
static __noinline struct sock_entry *fill_entry(__u64 file, __u64 priv, __u64 fops, __u64 ino, int dns)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	struct sock_entry *e;
	struct sock *sk;
	int never;

	if (!s)
		return NULL;
	e = &s->tmp;
	__builtin_memset(e, 0, sizeof(*e));
	e->ino = ino;
	sk = socket_sock((struct socket *)priv, dns, &never);
	if (!sk) {
		if (never) /* proto 0: lookup_sock answers NULL from the cache */
			bpf_map_update_elem(&sock_cache, &file, e, BPF_ANY);
		return NULL;
	}
	e->sock_id = (__u64)sk;
	e->proto = BPF_CORE_READ(sk, sk_protocol);
	e->role = lookup_role(e->sock_id);
	e->h2 = 1; /* not known yet: the first payloads are walked */
	read_tuple(sk, &e->tuple);
	if (e->proto != IPPROTO_TCP || !e->tuple.sport || !e->tuple.dport)
		return e;
	if (!sock_fops)
		sock_fops = fops; /* a TCP socket's file: every socket file has this f_op */
	if (bpf_map_update_elem(&sock_cache, &file, e, BPF_ANY))
		return e;
	e = bpf_map_lookup_elem(&sock_cache, &file);
	return e ? e : &s->tmp;
}

/* The socket behind fd when it is a TCP socket (or, with `dns`, a DNS UDP
 * socket), NULL otherwise. A cached socket costs three reads (fd table slot,
 * struct file head, inode head) and a hash lookup; anything not a socket stops
 * after two. `refresh` resolves it in full again (after connect/accept).
 * *file_out gets the struct file address when fd is a socket, else 0. */
static __always_inline struct sock_entry *lookup_sock(__s32 fd, int dns, int refresh, __u64 *file_out)
{
	__u64 file = fd_file(fd), fops, priv, inode, ino, known = sock_fops;
	struct sock_entry *e;
	__u16 mode;

	*file_out = 0;
	if (!file)
		return NULL;
	read_file_head(file, &fops, &priv, &inode);
	if (known && fops != known)
		return NULL;
	if (!read_inode(inode, &mode, &ino) || (mode & S_IFMT) != S_IFSOCK)
		return NULL;
	*file_out = file;
	if (!refresh) {
		e = bpf_map_lookup_elem(&sock_cache, &file);
		if (e && e->ino == ino)
			return e->proto ? e : NULL;
	}
	return fill_entry(file, priv, fops, ino, dns);
}

/* 1 when the connection is traced: not the far end of one of the agent's
 * connections, and through the port filter. The verdicts are kept in the entry
 * and redone only when their inputs changed (filter_config.generation, self_gen). */
static __always_inline int sock_traced(struct sock_entry *e, const struct filter_config *cfg)
{
	__u32 fgen = cfg ? cfg->generation : 0, sgen = self_gen;

	if (!e->verdicts || e->self_gen != sgen) {
		e->far_end = is_far_end_of_self(&e->tuple);
		e->self_gen = sgen;
	}
	if (!e->verdicts || e->filter_gen != fgen) {
		e->port_ok = ports_allowed(cfg, &e->tuple);
		e->filter_gen = fgen;
	}
	e->verdicts = 1;
	if (e->far_end) {
		stat_add(STAT_SELF_SKIPPED, 1);
		return 0;
	}
	return e->port_ok;
}

/* A syscall that was already blocked when the probes were attached (a server
 * thread waiting in read() on a keep-alive connection) has no slot. Its
 * arguments are still in the user registers saved at syscall entry (pt_regs at
 * the top of the task's kernel stack, untouched until the return value is
 * written), so the call is rebuilt from them at exit. bpf_task_pt_regs()
 * appeared in 5.15; older kernels skip the fallback and pick the connection up
 * on its next syscall. */
static __always_inline int rebuild_call(struct data_call *call, __u8 kind)
{
	struct pt_regs *regs;

	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return -1;
	/* BTF-typed: the registers are plain loads, not helper reads. */
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	call->fd = PT_REGS_PARM1_SYSCALL(regs);
	call->buf = PT_REGS_PARM2_SYSCALL(regs);
	call->vlen = kind == BUF_PLAIN ? 0 : PT_REGS_PARM3_SYSCALL(regs);
	call->ts_enter = 0;
	return 0;
}

/* The connection's health at this syscall (spans get retransmits and RTT from
 * it): srtt_us and total_retrans of the tcp_sock, in one read of the span
 * between them when it is short enough (520 bytes on 6.x), else two. The span
 * goes to the record's payload area, overwritten by the payload right after. */
static __always_inline void read_health(struct sock_data_event *h, __u64 sock_id)
{
	struct tcp_sock *tp = (struct tcp_sock *)sock_id;
	struct data_scratch *s = (struct data_scratch *)h; /* the header is the scratch slot's start */
	__u32 o_srtt = bpf_core_field_offset(struct tcp_sock, srtt_us);
	__u32 o_retrans = bpf_core_field_offset(struct tcp_sock, total_retrans);
	__u32 lo = o_srtt < o_retrans ? o_srtt : o_retrans;
	__u32 span = (o_srtt < o_retrans ? o_retrans : o_srtt) + 4 - lo;

	if (span <= 1024 && !(o_srtt & 3) && !(o_retrans & 3) &&
	    bpf_core_field_size(struct tcp_sock, srtt_us) == 4 && bpf_core_field_size(struct tcp_sock, total_retrans) == 4) {
		if (bpf_probe_read_kernel(s->buf, span, (void *)(sock_id + lo)))
			return;
		h->srtt_us = *(__u32 *)&s->buf[(o_srtt - lo) & 1023] >> 3;
		h->total_retrans = *(__u32 *)&s->buf[(o_retrans - lo) & 1023];
	} else {
		h->total_retrans = BPF_CORE_READ(tp, total_retrans);
		h->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	}
}

static __always_inline void fill_header(struct sock_data_event *h, const struct sock_entry *e,
					const struct data_call *call, __u64 id, __u64 now, __u8 syscall, __u8 dir)
{
	h->type = EVENT_SOCK_DATA;
	h->tgid = id >> 32;
	h->tid = (__u32)id;
	h->fd = call->fd;
	h->ts_enter = call->ts_enter ? call->ts_enter : now; /* unknown: the call began before we attached */
	h->ts_exit = now;
	h->sock_id = e->sock_id;
	h->direction = dir;
	h->role = e->role;
	h->syscall = syscall;
	h->proto = e->proto;
	h->ext_offset = 0;
	h->tuple = e->tuple;
	h->total_retrans = 0;
	h->srtt_us = 0;
	if (e->proto == IPPROTO_TCP)
		read_health(h, e->sock_id);
}

static __always_inline void submit(struct data_scratch *s, __u32 captured, __u64 len)
{
	__u32 limit = max_capture_bytes;

	if (limit > MAX_CAPTURE_BYTES)
		limit = MAX_CAPTURE_BYTES;
	if (len > limit)
		stat_add(STAT_TRUNCATED, 1);
	if (captured > MAX_CAPTURE_BYTES)
		captured = MAX_CAPTURE_BYTES;
	s->hdr.len = len > 0xffffffffULL ? 0xffffffffU : (__u32)len;
	s->hdr.captured = captured;
	if (bpf_ringbuf_output(&events, s, sizeof(s->hdr) + verifier_bound(captured), rb_flags()))
		count_lost(sizeof(s->hdr) + captured);
	else
		stat_add(STAT_EVENTS, 1);
}

/* Copy up to `len` bytes spread over `vlen` iovecs into this CPU's scratch
 * buffer; returns bytes copied. A global (non-static, noinline) function: the
 * verifier checks it once on its own instead of once per calling program and
 * call site, which keeps loading fast with MAX_IOV iterations (inlined into the
 * 5 iovec exits x MAX_MMSG, loading took seconds). Its arguments must be
 * scalars, so it finds the scratch slot itself. */
__noinline int copy_iov(__u64 iov_ptr, __u32 vlen, __u64 len)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	__u32 limit = max_capture_bytes;
	__u32 copied = 0;

	if (!s)
		return 0;

	if (limit > MAX_CAPTURE_BYTES)
		limit = MAX_CAPTURE_BYTES;
	if (len < limit)
		limit = len;
	for (int i = 0; i < MAX_IOV; i++) {
		struct iovec iov;
		__u64 take;

		if (i >= vlen || copied >= limit)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iov_ptr + i * sizeof(struct iovec))))
			break;
		take = iov.iov_len;
		if (take > limit - copied)
			take = limit - copied;
		if (take > MAX_CAPTURE_BYTES)
			take = MAX_CAPTURE_BYTES;
		/* offset < MAX_CAPTURE_BYTES and take <= MAX_CAPTURE_BYTES: inside buf. */
		if (bpf_probe_read_user(&s->buf[copied & (MAX_CAPTURE_BYTES - 1)], take & (2 * MAX_CAPTURE_BYTES - 1),
					iov.iov_base))
			break;
		copied += take;
	}
	return copied;
}

/* ---- HTTP/2 frames past the capture ----
 *
 * A gRPC server often writes a large message and its trailers in one syscall;
 * with only the head of the payload captured, grpc-status (in the trailing
 * HEADERS frame) would be lost, and so would the frame boundaries user space
 * needs to go on parsing. So for connections that carry HTTP/2 frames, the
 * kernel walks the frame headers of every data syscall (reading only 9 bytes
 * per frame) and, when the payload is longer than the capture, appends
 * "segments" to the record: every frame header and the whole of every non-DATA
 * frame past the head, at their offsets. User space then sees every frame and
 * skips DATA payloads by length, exactly as if all was captured.
 *
 * Frame positions carry over between syscalls (h2_frames): a read may end in
 * the middle of a frame or even of its 9-byte header. A connection is taken
 * as HTTP/2 when a syscall's payload is an exact chain of frames of known
 * types; the state is dropped when a chain breaks. A wrong guess costs nothing
 * but a few forwarded bytes: segments are placed at their true offsets, so
 * user space never misreads them. */

#define H2_HDR_LEN 9
#define H2_DATA 0
#define H2_LAST_KNOWN_TYPE 9 /* CONTINUATION */
#define SEG_MASK (MAX_CAPTURE_BYTES - 1)


/* Advance the iovec cursor by one entry; 0 on success. One entry per call, no
 * loop: the callers run inside bpf_loop, and nested loops there make the
 * verifier explore every combination of iterations. */
static __always_inline int iov_step(struct data_scratch *s, struct h2_walk_ctx *w)
{
	struct iovec iov;

	if (w->iov_idx + 1 >= w->vlen)
		return -1;
	w->iov_start += w->iov_len;
	w->iov_idx++;
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(w->buf + (__u64)(w->iov_idx & 0xffff) * sizeof(iov))))
		return -1;
	w->iov_base = (__u64)iov.iov_base;
	w->iov_len = iov.iov_len;
	return 0;
}

/* User address of payload offset p (at or past the cursor), and in *room the
 * bytes contiguous from it; 0 when p lies in a later iovec. */
static __always_inline __u64 user_addr(struct h2_walk_ctx *w, __u32 p, __u32 *room)
{
	if (!w->vlen) {
		*room = w->len - p;
		return w->buf + p;
	}
	if (p < w->iov_start || p >= w->iov_start + w->iov_len)
		return 0;
	*room = w->iov_start + w->iov_len - p;
	return w->iov_base + (p - w->iov_start);
}

/* Frame header bytes are gathered here, in map memory (variable offsets are
 * fine there, not on the stack); segments never reach this far. */
#define HDR_TMP (2 * MAX_CAPTURE_BYTES - 64)

/* n <= 9 payload bytes from offset p into s->buf[HDR_TMP + at ...]: from the
 * head where captured, then from user memory (at most three iovecs). */
static __always_inline int read_payload(struct data_scratch *s, struct h2_walk_ctx *w, __u32 p, __u32 n, __u32 at)
{
	__u8 *buf = s->buf;
	__u32 k = 0, room, take;
	__u64 addr;

	if (n > H2_HDR_LEN || at > H2_HDR_LEN)
		return -1;
	for (int i = 0; i < H2_HDR_LEN; i++) {
		if (k >= n || p + k >= w->captured)
			break;
		buf[HDR_TMP + ((at + k) & 31)] = buf[(p + k) & SEG_MASK];
		k++;
	}
	for (int i = 0; i < 3; i++) {
		if (k >= n)
			return 0;
		addr = user_addr(w, p + k, &room);
		if (!addr) {
			if (iov_step(s, w))
				return -1;
			continue;
		}
		take = n - k < room ? n - k : room;
		if (bpf_probe_read_user(&buf[HDR_TMP + ((at + k) & 31)], small_bound(take),
					(void *)addr))
			return -1;
		k += take;
	}
	return k >= n ? 0 : -1;
}

/* Length and type of the frame header gathered at HDR_TMP. */
static __always_inline __u32 tmp_len(struct data_scratch *s)
{
	__u8 *h = &s->buf[HDR_TMP];

	return ((__u32)h[0] << 16) | ((__u32)h[1] << 8) | h[2];
}

/* Start appending payload [a, b) to the record's segments (the part inside
 * the head is already there); h2_step copies it. Contiguous ranges share one
 * segment. */
static __always_inline void forward(struct data_scratch *s, struct h2_walk_ctx *w, __u32 a, __u32 b)
{
	struct data_segment *seg;

	if (a < w->captured)
		a = w->captured;
	if (b <= a)
		return;
	if (w->seg_pos && w->seg_end == a) {
		if (w->ext + (b - a) > MAX_CAPTURE_BYTES - 1)
			return; /* no room: the record ends here; user space resyncs later */
	} else {
		if (w->ext + sizeof(*seg) + (b - a) > MAX_CAPTURE_BYTES - 1)
			return;
		w->seg_pos = w->ext;
		seg = (struct data_segment *)&s->buf[w->ext & SEG_MASK];
		seg->offset = a;
		seg->size = 0;
		w->ext += sizeof(*seg);
	}
	w->copy_a = a;
	w->copy_b = b;
	w->seg_end = b;
}

/* One piece of a pending copy: the part of [copy_a, copy_b) in one iovec. */
static __always_inline int copy_piece(struct data_scratch *s, struct h2_walk_ctx *w)
{
	struct data_segment *seg;
	__u32 room, n;
	__u64 addr = user_addr(w, w->copy_a, &room);

	if (!addr)
		return iov_step(s, w);
	n = w->copy_b - w->copy_a;
	if (n > room)
		n = room;
	/* ext < MAX_CAPTURE_BYTES and n < MAX_CAPTURE_BYTES: inside buf. */
	if (bpf_probe_read_user(&s->buf[w->ext & SEG_MASK], n & SEG_MASK, (void *)addr))
		return -1;
	w->ext += n;
	w->copy_a += n;
	seg = (struct data_segment *)&s->buf[w->seg_pos & SEG_MASK];
	seg->size += n;
	return 0;
}

/* bpf_loop callback: one step of the walk — a piece of a pending copy, a move
 * of the iovec cursor, or one frame header at w->off. Returns 1 to stop. */
static long h2_step(__u32 i, void *arg)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct data_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	struct h2_walk_ctx *w;
	__u32 off, plen, hend, room;
	__u64 end;
	__u8 type;

	if (!s)
		return 1;
	w = &s->walk;
	off = w->off;
	if (w->copy_a < w->copy_b) {
		if (copy_piece(s, w))
			w->failed = 1;
		return w->failed ? 1 : 0;
	}
	if (off >= w->len)
		return 1;
	if (w->vlen && off >= w->captured && !user_addr(w, off, &room)) {
		if (iov_step(s, w))
			w->failed = 1;
		return w->failed ? 1 : 0;
	}
	if (w->len - off < H2_HDR_LEN) { /* the header goes on in the next syscall */
		w->have = w->len - off;
		if (read_payload(s, w, off, w->have, 0))
			w->failed = 1;
		else
			__builtin_memcpy(w->hdr, &s->buf[HDR_TMP], H2_HDR_LEN);
		forward(s, w, off, w->len);
		w->off = w->len;
		return w->failed ? 1 : 0;
	}
	if (read_payload(s, w, off, H2_HDR_LEN, 0)) {
		w->failed = 1;
		return 1;
	}
	plen = tmp_len(s);
	type = s->buf[HDR_TMP + 3];
	if (w->strict && type > H2_LAST_KNOWN_TYPE) {
		w->failed = 1;
		return 1;
	}
	hend = off + H2_HDR_LEN;
	end = (__u64)hend + plen;
	forward(s, w, off, type == H2_DATA ? hend : (end < w->len ? (__u32)end : w->len));
	w->frames++;
	if (end > w->len) {
		w->skip = end - w->len;
		w->keep = type != H2_DATA;
		w->off = w->len;
	} else {
		w->off = end;
	}
	return 0;
}

/* Walk the HTTP/2 frames of a data syscall's payload (see above); returns the
 * bytes now in the scratch record: `captured`, plus any segments, and sets
 * walk.stored to 0 when the connection has no frame state left (then its next
 * payloads are walked only if they may start a frame chain). A global
 * function, verified once. */
__noinline int h2_walk(__u64 sock_id, __u64 buf, __u32 vlen_dir, __u32 len, __u32 captured)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 vlen = vlen_dir & 0xffff; /* five arguments at most: iovec count | direction << 16 */
	struct h2_key key = {.sock_id = sock_id, .direction = vlen_dir >> 16};
	struct data_scratch *s;
	struct h2_walk_ctx *w;
	struct h2_state *st, next = {};
	struct iovec iov;

	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_loop))
		return captured;
	s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s)
		return captured;
	w = &s->walk;
	__builtin_memset(w, 0, sizeof(*w));
	w->stored = 1; /* unknown on the early returns: keep walking this connection */
	if (captured > MAX_CAPTURE_BYTES - 1 || !len)
		return captured;
	w->buf = buf;
	w->vlen = vlen;
	w->len = len;
	w->captured = captured;
	w->ext = captured;
	if (vlen) {
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)buf))
			return captured;
		w->iov_base = (__u64)iov.iov_base;
		w->iov_len = iov.iov_len;
	}
	st = bpf_map_lookup_elem(&h2_frames, &key);
	if (!st) {
		w->strict = 1;
	} else {
		__u32 off = 0, skip = st->skip;
		__u8 keep = st->keep;

		if (st->have) { /* complete the split header */
			__u32 have = st->have, need = H2_HDR_LEN - have;

			if (have >= H2_HDR_LEN || len < need) {
				bpf_map_delete_elem(&h2_frames, &key); /* rare: drop and resync */
				w->stored = 0;
				return captured;
			}
			__builtin_memcpy(&s->buf[HDR_TMP], st->hdr, H2_HDR_LEN);
			if (read_payload(s, w, 0, need, have)) {
				bpf_map_delete_elem(&h2_frames, &key);
				w->stored = 0;
				return captured;
			}
			skip = tmp_len(s);
			keep = s->buf[HDR_TMP + 3] != H2_DATA;
			off = need;
		}
		if (skip) {
			__u32 k = skip < len - off ? skip : len - off;

			off += k;
			w->skip = skip - k;
			w->keep = keep;
		}
		/* the split header's tail and the rest of a kept frame are forwarded */
		forward(s, w, 0, keep ? off : (st->have ? H2_HDR_LEN - st->have : 0));
		w->off = off;
	}
	if (!w->failed && (w->off < len || w->copy_a < w->copy_b)) {
		if (w->off < len) {
			w->skip = 0;
			w->keep = 0;
		}
		bpf_loop(MAX_H2_STEPS, h2_step, NULL, 0);
	}
	if (!w->failed && (w->off < len || w->copy_a < w->copy_b))
		w->failed = 1; /* more steps than MAX_H2_STEPS */
	if (w->strict && (w->failed || w->skip || w->have || !w->frames)) {
		w->stored = 0;
		return captured; /* not (yet) known as HTTP/2: nothing forwarded */
	}
	if (w->failed) {
		bpf_map_delete_elem(&h2_frames, &key);
		w->stored = 0;
		return captured;
	}
	if (st) {
		/* In place: an LRU hash update allocates a new element every time. One
		 * writer per connection direction in practice (a frame stream written
		 * by two threads at once would be corrupt anyway). */
		st->skip = w->skip;
		st->keep = w->keep;
		st->have = w->have;
		__builtin_memcpy(st->hdr, w->hdr, H2_HDR_LEN);
	} else {
		next.skip = w->skip;
		next.keep = w->keep;
		next.have = w->have;
		__builtin_memcpy(next.hdr, w->hdr, H2_HDR_LEN);
		bpf_map_update_elem(&h2_frames, &key, &next, BPF_ANY);
	}
	return w->ext;
}

static __always_inline void forget_frames(__u64 sock_id)
{
	struct h2_key key = {.sock_id = sock_id, .direction = DIR_EGRESS};

	bpf_map_delete_elem(&h2_frames, &key);
	key.direction = DIR_INGRESS;
	bpf_map_delete_elem(&h2_frames, &key);
}

/* 1 when a syscall's payload may begin an exact chain of HTTP/2 frames, which
 * the walk needs to take a connection as HTTP/2 (strict mode): its head holds a
 * frame header of a known type whose frame ends inside the payload. 0 means the
 * strict walk would stop at the first header: HTTP/1 text ("GET ", "HTTP") has
 * a type byte past 9 and a length in the millions. */
static __always_inline int may_start_frames(struct data_scratch *s, __u32 captured, __u64 len)
{
	__u32 plen;

	if (captured < H2_HDR_LEN)
		return 1; /* cannot tell from the head */
	plen = ((__u32)s->buf[0] << 16) | ((__u32)s->buf[1] << 8) | s->buf[2];
	return s->buf[3] <= H2_LAST_KNOWN_TYPE && (__u64)plen + H2_HDR_LEN <= len;
}

/* The head as captured, plus HTTP/2 segments when the payload is longer. The
 * frame walk (a map lookup and a bpf_loop) runs on connections with HTTP/2
 * frame state and on payloads that may start one; an HTTP/1 connection skips
 * it after its first payload. */
static __always_inline __u32 with_frames(struct data_scratch *s, struct sock_entry *e, const struct data_call *call,
					 __u32 captured, __u64 len, int iov, __u8 dir)
{
	__u32 total;

	if (len > 0xffffffffULL || e->proto != IPPROTO_TCP)
		return captured;
	if (!e->h2 && !may_start_frames(s, captured, len))
		return captured;
	total = h2_walk(e->sock_id, call->buf, (iov ? call->vlen & 0xffff : 0) | ((__u32)dir << 16), len, captured);
	if (e->h2 != s->walk.stored)
		e->h2 = s->walk.stored;
	if (total > captured) {
		s->hdr.ext_offset = captured;
		stat_add(STAT_H2_FORWARDED, 1);
	}
	return total;
}

static __always_inline int exit_data(long ret, __u8 syscall, __u8 kind, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid(), file, now;
	__u32 idx = (__u32)id & (MAX_CALL_SLOTS - 1), cpu, tgid = id >> 32;
	struct data_call call = {};
	struct filter_config *cfg;
	struct data_scratch *s;
	struct sock_entry *e;

	if (dir == DIR_EGRESS || ingress_enter) {
		struct call_slot *slot = bpf_map_lookup_elem(&calls, &idx);

		if (!slot)
			return 0;
		if (slot->id == id && slot->syscall == syscall) {
			call.ts_enter = slot->ts_enter;
			call.buf = slot->buf;
			call.fd = slot->fd;
			call.vlen = slot->vlen;
			slot->id = 0;
			if (ret <= 0)
				return 0;
		} else if (ret <= 0 || rebuild_call(&call, kind)) {
			return 0;
		}
	} else if (ret <= 0 || rebuild_call(&call, kind)) {
		return 0;
	}
	if (tgid == targ_self_tgid) {
		if (dir == DIR_INGRESS && !ingress_enter)
			is_self(tgid, call.fd, 0); /* (no entry program ran for it) */
		return 0;
	}
	cfg = get_filter_cfg();
	if (!pid_allowed_by(cfg, tgid))
		return 0;
	e = lookup_sock(call.fd, 1, 0, &file);
	if (!e || !sock_traced(e, cfg))
		return 0;
	if (syscall == SYS_RECVMSG || syscall == SYS_SENDMSG) {
		/* The iovecs are read from the message header only for traced sockets. */
		struct user_msghdr mh;

		if (bpf_probe_read_user(&mh, sizeof(mh), (void *)call.buf))
			return 0;
		call.buf = (__u64)mh.msg_iov;
		call.vlen = mh.msg_iovlen;
	}
	if (e->role == ROLE_UNKNOWN) {
		__u8 role = lookup_role(e->sock_id);

		if (role != ROLE_UNKNOWN)
			e->role = role;
	}
	now = bpf_ktime_get_ns();
	cpu = bpf_get_smp_processor_id();
	s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s)
		return 0;
	fill_header(&s->hdr, e, &call, id, now, syscall, dir);

	/* `kind` is a constant of the calling program: the other branches compile away. */
	if (kind == BUF_PLAIN) {
		__u32 limit = max_capture_bytes;
		__u64 n = ret;
		if (limit > MAX_CAPTURE_BYTES)
			limit = MAX_CAPTURE_BYTES;
		if (n > limit)
			n = limit;
		if (syscall == SYS_SENDFILE)
			n = 0; /* bytes come from a file, not a user buffer */
		else if (bpf_probe_read_user(s->buf, n & (2 * MAX_CAPTURE_BYTES - 1), (void *)call.buf))
			n = 0;
		else
			n = with_frames(s, e, &call, n, ret, 0, dir);
		submit(s, n, ret);
	} else if (kind == BUF_IOV) {
		submit(s, with_frames(s, e, &call, copy_iov(call.buf, call.vlen, ret), ret, 1, dir), ret);
	} else {
		/* recvmmsg/sendmmsg: ret is the number of messages. */
		for (int m = 0; m < MAX_MMSG; m++) {
			struct mmsghdr mh;
			if (m >= ret || m >= call.vlen)
				break;
			if (bpf_probe_read_user(&mh, sizeof(mh), (void *)(call.buf + m * sizeof(struct mmsghdr))))
				break;
			if (!mh.msg_len)
				continue;
			submit(s, copy_iov((__u64)mh.msg_hdr.msg_iov, (__u32)mh.msg_hdr.msg_iovlen, mh.msg_len),
			       mh.msg_len);
		}
	}
	return 0;
}

/* ---- data syscalls ---- */

/* Stamp the thread's slot with the call's entry time and arguments: whether
 * the fd is a traced socket is decided at exit, and only for calls that moved
 * bytes. The agent's own calls only record its connections (is_self). */
static __always_inline int enter_data(__s32 fd, __u64 buf, __u32 vlen, __u8 syscall)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 idx = (__u32)id & (MAX_CALL_SLOTS - 1);
	struct call_slot *slot;

	if ((__u32)(id >> 32) == targ_self_tgid) {
		is_self(id >> 32, fd, 0);
		return 0;
	}
	slot = bpf_map_lookup_elem(&calls, &idx);
	if (!slot)
		return 0;
	slot->ts_enter = bpf_ktime_get_ns();
	slot->buf = buf;
	slot->fd = fd;
	slot->vlen = vlen;
	slot->syscall = syscall;
	slot->id = id;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int sys_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, SYS_READ);
}

SEC("tracepoint/syscalls/sys_enter_write")
int sys_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, SYS_WRITE);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int sys_enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, SYS_RECVFROM);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int sys_enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, SYS_SENDTO);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int sys_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], SYS_READV);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int sys_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], SYS_WRITEV);
}

/* recvmsg/sendmsg: the message header is read at exit, for traced sockets only. */
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int sys_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, SYS_RECVMSG);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int sys_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], 0, SYS_SENDMSG);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int sys_enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], SYS_RECVMMSG);
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int sys_enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], SYS_SENDMMSG);
}

SEC("tracepoint/syscalls/sys_enter_sendfile64")
int sys_enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], 0, 0, SYS_SENDFILE);
}

SEC("tracepoint/syscalls/sys_exit_read")
int sys_exit_read(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_READ, BUF_PLAIN, DIR_INGRESS); }
SEC("tracepoint/syscalls/sys_exit_write")
int sys_exit_write(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_WRITE, BUF_PLAIN, DIR_EGRESS); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int sys_exit_recvfrom(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_RECVFROM, BUF_PLAIN, DIR_INGRESS); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int sys_exit_sendto(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_SENDTO, BUF_PLAIN, DIR_EGRESS); }
SEC("tracepoint/syscalls/sys_exit_readv")
int sys_exit_readv(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_READV, BUF_IOV, DIR_INGRESS); }
SEC("tracepoint/syscalls/sys_exit_writev")
int sys_exit_writev(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_WRITEV, BUF_IOV, DIR_EGRESS); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sys_exit_recvmsg(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_RECVMSG, BUF_IOV, DIR_INGRESS); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sys_exit_sendmsg(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_SENDMSG, BUF_IOV, DIR_EGRESS); }
SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int sys_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_RECVMMSG, BUF_MMSG, DIR_INGRESS); }
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sys_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_SENDMMSG, BUF_MMSG, DIR_EGRESS); }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int sys_exit_sendfile64(struct trace_event_raw_sys_exit *ctx) { return exit_data(ctx->ret, SYS_SENDFILE, BUF_PLAIN, DIR_EGRESS); }

/* ---- connection lifecycle ---- */

static __always_inline void emit_conn(__u32 type, __s32 fd, const struct sock_entry *se, __u8 role)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(sizeof(*e));
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	e->fd = fd;
	e->ts = bpf_ktime_get_ns();
	e->sock_id = se->sock_id;
	e->role = role;
	e->tuple = se->tuple;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags());
	stat_add(STAT_EVENTS, 1);
}

static __always_inline int conn_opened(__s32 fd, __u8 role)
{
	__u64 id = bpf_get_current_pid_tgid(), file;
	__u32 tgid = id >> 32;
	struct sock_entry *e;

	if (is_self(tgid, fd, 0) || !pid_allowed(tgid))
		return 0;
	/* Resolved in full: a socket connected again after connect(AF_UNSPEC) keeps
	 * its struct file and inode but not its tuple. */
	e = lookup_sock(fd, 0, 1, &file);
	if (!e)
		return 0;
	bpf_map_update_elem(&sock_role, &e->sock_id, &role, BPF_ANY);
	e->role = role;
	if (!sock_traced(e, get_filter_cfg()))
		return 0;
	emit_conn(EVENT_CONN_OPEN, fd, e, role);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return ctx->ret >= 0 ? conn_opened(ctx->ret, ROLE_SERVER) : 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return ctx->ret >= 0 ? conn_opened(ctx->ret, ROLE_SERVER) : 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int sys_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__s32 fd = ctx->args[0];

	bpf_map_update_elem(&pending_connect, &id, &fd, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__s32 *fd = bpf_map_lookup_elem(&pending_connect, &id);
	__s32 f;

	if (!fd)
		return 0;
	f = *fd;
	bpf_map_delete_elem(&pending_connect, &id);
	if (ctx->ret == 0 || ctx->ret == -EINPROGRESS)
		conn_opened(f, ROLE_CLIENT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int sys_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), file;
	__u32 tgid = id >> 32;
	__s32 fd = ctx->args[0];
	struct sock_entry *e;
	__u8 role;

	if (is_self(tgid, fd, 1) || !pid_allowed(tgid))
		return 0;
	e = lookup_sock(fd, 0, 0, &file);
	if (e) {
		forget_frames(e->sock_id);
		role = e->role != ROLE_UNKNOWN ? e->role : lookup_role(e->sock_id);
		if (sock_traced(e, get_filter_cfg()))
			emit_conn(EVENT_CONN_CLOSE, fd, e, role);
	}
	/* Any socket's entry goes (unix ones too). The struct file may live on
	 * (dup, fork): its next use resolves it again. */
	if (file)
		bpf_map_delete_elem(&sock_cache, &file);
	return 0;
}

/* Role of connections established by any means (including ones whose
 * connect/accept happened in a process we do not see the syscall of, e.g.
 * io_uring or a fd passed over a unix socket): SYN_SENT->ESTABLISHED is the
 * client side, SYN_RECV->ESTABLISHED the server side. Entries are removed when
 * the socket reaches TCP_CLOSE. */
SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sock_id = (__u64)ctx->skaddr;
	__u8 role;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (ctx->newstate == TCP_ESTABLISHED) {
		if (ctx->oldstate == TCP_SYN_SENT)
			role = ROLE_CLIENT;
		else if (ctx->oldstate == TCP_SYN_RECV)
			role = ROLE_SERVER;
		else
			return 0;
		bpf_map_update_elem(&sock_role, &sock_id, &role, BPF_ANY);
	} else if (ctx->newstate == 7 /* TCP_CLOSE */) {
		bpf_map_delete_elem(&sock_role, &sock_id);
	}
	return 0;
}
