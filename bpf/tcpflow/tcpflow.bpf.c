// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/* tcpflow: one record per TCP connection, with no per-packet event to user space.
 *
 * A flow is a struct sock in the `flows` table. It enters at connect
 * (SYN_SENT: client) or at establishment from SYN_RECV (server), or the first
 * time any hook sees a connection opened before the agent (partial). Its final
 * record (CLOSED, or FAILED for a connect that never got established) is sent
 * when the socket reaches TCP_CLOSE, with the counters of struct tcp_sock read
 * by CO-RE; the entry then goes. While it lives, a sendmsg/recvmsg call or a
 * retransmission on it sends an ACTIVE snapshot when the last record is older
 * than flow_interval_ns: snapshots follow traffic, an idle flow sends none.
 *
 * Hooks, all tracepoints (no kprobes): sock/inet_sock_set_state (life cycle),
 * sock/sock_{send,recv}_length (process context and snapshots; Linux >= 6.3,
 * user space leaves them out when absent), tcp/tcp_{send,receive}_reset,
 * tcp/tcp_retransmit_skb. Their cost is a hash lookup per call; a record goes
 * to the ring only at close or once per interval.
 *
 * Process attribution: pid and comm come from the connecting process at
 * SYN_SENT (connect() runs in its context), and for server flows, which are
 * established in softirq where `current` is whoever was interrupted, from the
 * first sendmsg/recvmsg on the socket. The cgroup id comes from the socket
 * itself (sk_cgrp_data: set by the creating process, inherited by accepted
 * sockets), so it is right in softirq too.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "../include/sizing.h"
#include "tcpflow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define EEXIST 17

/* ---- knobs, set by user space before load ---- */
const volatile __u32 targ_self_tgid = 0;                      /* the agent: its flows are never sent */
const volatile __u64 flow_interval_ns = 15ULL * 1000000000ULL; /* ACTIVE snapshot period per flow */
const volatile __u64 wakeup_bytes = 64 * 1024;                /* force a reader wakeup past this backlog */

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* resized by user space before load */
} events SEC(".maps");

struct flow {
	__u64 ts_start;
	__u64 last_emit; /* ts of the last record sent (or of creation) */
	__u64 cgroup_id;
	__u64 base_bytes_sent; /* counters at first sight of a partial flow */
	__u64 base_bytes_received;
	__u32 base_retrans;
	__u32 pid;
	__u32 resets_sent;
	__u32 resets_received;
	__u8 role;
	__u8 partial;
	__u8 _pad[6];
	struct conn_tuple tuple;
	char comm[16];
};

/* LRU: an entry whose TCP_CLOSE we never see (none is known, but a leak must
 * not fill the table for good) is evicted under pressure. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, __u64); /* struct sock address */
	__type(value, struct flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Force BTF emission of the record and enums decoded by user space. */
const struct tcp_flow_event *_unused_tcp_flow_event __attribute__((unused));
const enum flow_event_type *_unused_flow_event_type __attribute__((unused));
const enum flow_state *_unused_flow_state __attribute__((unused));
const enum flow_role *_unused_flow_role __attribute__((unused));
const enum flow_stat_index *_unused_flow_stat_index __attribute__((unused));

/* ---- CO-RE shims: each kernel difference in one place ---- */

/* Socket flags (SOCK_DONE...) are __sk_common.skc_flags in recent kernels
 * (6.18 here; `sk_flags` is a #define of it); older ones (6.1) have
 * `unsigned long sk_flags` in struct sock itself: */
struct sock___old {
	unsigned long sk_flags;
} __attribute__((preserve_access_index));

/* tcp_send_reset has its own event class (trace_event_raw_tcp_send_reset)
 * since the RST reasons were added (about 6.10); before, it used the
 * tcp_event_sk_skb class. Both carry `skaddr`. */
struct trace_event_raw_tcp_event_sk_skb___old {
	const void *skaddr;
} __attribute__((preserve_access_index));

/* sock/sock_send_length and sock/sock_recv_length appeared in Linux 6.3. User
 * space does not load their programs when tracefs lacks them; the guard keeps
 * the object loadable there too (the ctx type is absent from older BTF). */
#define HAVE_SOCK_MSG_LENGTH bpf_core_type_exists(struct trace_event_raw_sock_msg_length)

static __always_inline unsigned long sock_flags(struct sock *sk)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return BPF_CORE_READ(sk, __sk_common.skc_flags);
	return BPF_CORE_READ((struct sock___old *)sk, sk_flags);
}

/* cgroup v2 id of the socket's cgroup. struct sock_cgroup_data holds a plain
 * cgroup pointer since Linux 5.15; before, it was packed in a u64 with flags. */
static __always_inline __u64 sock_cgroup_id(struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

/* ---- helpers ---- */

#include "../include/record_helpers.bpf.h"

static __always_inline void read_tuple(struct sock *sk, struct conn_tuple *t)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	t->family = family;
	/* inet_sport, not skc_num: tcp_set_state(TCP_CLOSE) releases the port
	 * (inet_put_port zeroes inet_num) before the tracepoint fires. */
	t->sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	t->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__u32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(t->saddr, &s, 4);
		__builtin_memcpy(t->daddr, &d, 4);
	} else {
		BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

/* The local port reads 0 at SYN_SENT: it is not chosen yet (tcp_v4_connect
 * sets the state before inet_hash_connect). So the tuple is read at creation,
 * read again while it lacks a port, and kept once complete. */
static __always_inline void refresh_tuple(struct sock *sk, struct flow *f)
{
	struct conn_tuple t = {};

	if (f->tuple.sport && f->tuple.dport)
		return;
	read_tuple(sk, &t);
	if (t.sport && t.dport)
		f->tuple = t;
}

struct counters {
	__u64 bytes_sent;
	__u64 bytes_received;
	__u32 segs_out;
	__u32 segs_in;
	__u32 retrans;
	__u32 srtt_us;
	__u32 min_rtt_us;
};

/* Payload byte counters of a socket in TCP state `state`.
 *
 * tcp_sock.bytes_acked and bytes_received are RFC 4898 counters of sequence
 * space (sum of snd_una / rcv_nxt advances), which also cover the SYN and FIN:
 *  - bytes_acked counts our SYN on the client side (tcp_rcv_synsent_state_process
 *    -> tcp_ack moves snd_una from the ISN); a server socket is born with
 *    snd_una = ISN + 1 (tcp_create_openreq_child), so its SYN-ACK never counts.
 *    A flow of unknown role keeps the +1 (its counters are partial anyway).
 *  - bytes_acked counts our FIN once acknowledged: we sent a FIN in FIN_WAIT1,
 *    FIN_WAIT2, CLOSING and LAST_ACK (tcp_send_fin advances write_seq past
 *    it), and it is acknowledged when snd_una == write_seq.
 *  - bytes_received counts the peer's FIN (tcp_data_queue advances rcv_nxt to
 *    end_seq, FIN included); tcp_fin sets SOCK_DONE then. The peer's SYN never
 *    counts (rcv_nxt is set to IRS + 1 directly).
 * TCP Fast Open (data on the SYN) is not corrected for. */
static __always_inline void read_counters(struct sock *sk, int state, __u8 role, struct counters *c)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 acked = BPF_CORE_READ(tp, bytes_acked);
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	__u32 min_rtt;

	if (role == ROLE_CLIENT && acked && state != TCP_SYN_SENT)
		acked--;
	if ((state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING || state == TCP_LAST_ACK) &&
	    acked && BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		acked--;
	if (received && (sock_flags(sk) >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1)
		received--;
	c->bytes_sent = acked;
	c->bytes_received = received;
	c->segs_out = BPF_CORE_READ(tp, segs_out);
	c->segs_in = BPF_CORE_READ(tp, segs_in);
	c->retrans = BPF_CORE_READ(tp, total_retrans);
	c->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3; /* stored << 3 */
	min_rtt = BPF_CORE_READ(tp, rtt_min.s[0].v);
	c->min_rtt_us = min_rtt == ~0U ? 0 : min_rtt; /* ~0: no sample yet (minmax_reset) */
}

static __always_inline int is_self(const struct flow *f)
{
	return targ_self_tgid && f->pid == targ_self_tgid;
}

/* Called in process context only: `current` owns the socket. */
static __always_inline void fill_process(struct flow *f)
{
	f->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(f->comm, sizeof(f->comm));
	if (!f->cgroup_id)
		f->cgroup_id = bpf_get_current_cgroup_id();
}

static __always_inline void init_flow(struct flow *f, struct sock *sk, __u8 role, __u8 partial, int state, __u64 now)
{
	f->ts_start = now;
	f->last_emit = now;
	f->role = role;
	f->partial = partial;
	read_tuple(sk, &f->tuple);
	f->cgroup_id = sock_cgroup_id(sk);
	if (partial) {
		struct counters c = {};

		read_counters(sk, state, role, &c);
		f->base_bytes_sent = c.bytes_sent;
		f->base_bytes_received = c.bytes_received;
		f->base_retrans = c.retrans;
	}
}

/* Enter a flow in the table; returns its entry. `flags`: BPF_ANY when the
 * socket starts a new connection (a reused struct sock replaces its old
 * entry), BPF_NOEXIST for a flow first seen mid-life (another CPU may have
 * entered it meanwhile: that entry is kept). */
static __always_inline struct flow *track(struct sock *sk, __u64 sock_id, __u8 role, __u8 partial, int state,
					  __u64 now, int process_ctx, __u64 flags)
{
	struct flow f = {};
	long err;

	init_flow(&f, sk, role, partial, state, now);
	if (process_ctx)
		fill_process(&f);
	err = bpf_map_update_elem(&flows, &sock_id, &f, flags);
	if (err == -EEXIST && flags == BPF_NOEXIST)
		return bpf_map_lookup_elem(&flows, &sock_id);
	if (err) {
		stat_add(STAT_FLOWS_FULL, 1);
		return NULL;
	}
	stat_add(partial ? STAT_FLOWS_PARTIAL : STAT_FLOWS_OPENED, 1);
	return bpf_map_lookup_elem(&flows, &sock_id);
}

static __always_inline void emit(struct sock *sk, struct flow *f, __u64 sock_id, __u8 flow_state, int tcp_state,
				 __s32 sk_err, __u64 now)
{
	struct tcp_flow_event *e;
	struct counters c = {};

	if (is_self(f)) {
		stat_add(STAT_SELF_SKIPPED, 1);
		return;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_add(STAT_LOST, 1);
		return;
	}
	read_counters(sk, tcp_state, f->role, &c);
	e->type = EVENT_TCP_FLOW;
	e->pid = f->pid;
	e->flow_id = sock_id;
	e->cgroup_id = f->cgroup_id;
	e->ts_start = f->ts_start;
	e->ts = now;
	e->bytes_sent = c.bytes_sent;
	e->bytes_received = c.bytes_received;
	e->base_bytes_sent = f->base_bytes_sent;
	e->base_bytes_received = f->base_bytes_received;
	e->base_retrans = f->base_retrans;
	e->segs_out = c.segs_out;
	e->segs_in = c.segs_in;
	e->total_retrans = c.retrans;
	e->srtt_us = c.srtt_us;
	e->min_rtt_us = c.min_rtt_us;
	e->resets_sent = f->resets_sent;
	e->resets_received = f->resets_received;
	e->sk_err = sk_err;
	e->state = flow_state;
	e->role = f->role;
	e->partial = f->partial;
	e->tcp_state = tcp_state;
	e->tuple = f->tuple;
	__builtin_memcpy(e->comm, f->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags());
	stat_add(STAT_EVENTS, 1);
	if (flow_state == FLOW_ACTIVE)
		stat_add(STAT_SNAPSHOTS, 1);
}

/* An ACTIVE snapshot when the flow's last record is older than the interval.
 * Two CPUs may both pass the check at once; the extra record only makes a
 * shorter interval (user space computes deltas from the totals). */
static __always_inline void maybe_snapshot(struct sock *sk, struct flow *f, __u64 sock_id, __u64 now)
{
	if (now - f->last_emit < flow_interval_ns)
		return;
	f->last_emit = now;
	refresh_tuple(sk, f);
	emit(sk, f, sock_id, FLOW_ACTIVE, BPF_CORE_READ(sk, __sk_common.skc_state), 0, now);
}

/* The flow of `sk`, entered as partial (role unknown) when first seen here.
 * Not for listening sockets, nor server sockets still in SYN_RECV: they are
 * not connections yet. */
static __always_inline struct flow *flow_of(struct sock *sk, __u64 sock_id, __u64 now, int process_ctx)
{
	struct flow *f = bpf_map_lookup_elem(&flows, &sock_id);
	int state;

	if (f)
		return f;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_LISTEN || state == TCP_SYN_RECV || state == TCP_CLOSE || state == TCP_NEW_SYN_RECV)
		return NULL;
	return track(sk, sock_id, ROLE_UNKNOWN, 1, state, now, process_ctx, BPF_NOEXIST);
}

static __always_inline int is_inet(__u16 family)
{
	return family == AF_INET || family == AF_INET6;
}

/* TCP_CLOSE: the final record, then the entry goes.
 *
 * A connection that never got established (closed from SYN_SENT/SYN_RECV) is
 * FAILED; user space names the reason from sk_err (ECONNREFUSED after a RST,
 * ETIMEDOUT after the SYN retries; tcp_reset and tcp_write_err set it before
 * tcp_done moves the state).
 *
 * Resets sent after the state change: an abortive close (close() with unread
 * data, SO_LINGER 0, connect(AF_UNSPEC)) moves ESTABLISHED/CLOSE_WAIT straight
 * to TCP_CLOSE and only then sends its RST (__tcp_close, tcp_disconnect call
 * tcp_send_active_reset after tcp_set_state), when the entry is already gone.
 * Every other way from those states to TCP_CLOSE carries an error in sk_err
 * (RST received, timeouts, tcp_abort) or a received RST, so that RST is
 * counted here. Aborts from the FIN states (FIN_WAIT2 with linger2 < 0, data
 * after shutdown) are not. */
static __always_inline void flow_closed(struct sock *sk, __u64 sock_id, int oldstate, __u64 now)
{
	struct flow *tracked = bpf_map_lookup_elem(&flows, &sock_id);
	struct flow f = {};
	__s32 err = BPF_CORE_READ(sk, sk_err);
	__u8 state = (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV) ? FLOW_FAILED : FLOW_CLOSED;

	/* Worked on a copy. Verifier quirk: with `f = tracked ?: &stack_flow`,
	 * clang computes &f->tuple from the map value before its NULL check
	 * ("pointer arithmetic on map_value_or_null prohibited"). */
	if (tracked) {
		f = *tracked;
		bpf_map_delete_elem(&flows, &sock_id);
	} else {
		/* Open before the agent (or evicted): reported from first sight, now. */
		if (oldstate == TCP_LISTEN || oldstate == TCP_SYN_RECV)
			return;
		init_flow(&f, sk, oldstate == TCP_SYN_SENT ? ROLE_CLIENT : ROLE_UNKNOWN, 1, oldstate, now);
		stat_add(STAT_FLOWS_PARTIAL, 1);
	}
	refresh_tuple(sk, &f);
	if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) && !err && !f.resets_received)
		f.resets_sent++;
	emit(sk, &f, sock_id, state, oldstate, err, now);
}

/* ---- programs ---- */

SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 sock_id = (__u64)sk;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	__u64 now;
	struct flow *f;

	if (ctx->protocol != IPPROTO_TCP || !is_inet(ctx->family))
		return 0;
	now = bpf_ktime_get_ns();
	switch (newstate) {
	case TCP_SYN_SENT:
		/* connect(): process context, `current` is the client. */
		track(sk, sock_id, ROLE_CLIENT, 0, newstate, now, 1, BPF_ANY);
		return 0;
	case TCP_ESTABLISHED:
		if (oldstate == TCP_SYN_RECV) {
			/* softirq: the process is not known yet (fill_process later) */
			track(sk, sock_id, ROLE_SERVER, 0, newstate, now, 0, BPF_ANY);
			return 0;
		}
		f = bpf_map_lookup_elem(&flows, &sock_id);
		if (f) {
			refresh_tuple(sk, f); /* the local port is chosen by now */
		} else if (oldstate == TCP_SYN_SENT) {
			track(sk, sock_id, ROLE_CLIENT, 1, newstate, now, 0, BPF_NOEXIST);
		}
		return 0;
	case TCP_CLOSE:
		flow_closed(sk, sock_id, oldstate, now);
		return 0;
	case TCP_LISTEN:
	case TCP_SYN_RECV:
		return 0;
	default:
		/* FIN_WAIT*, CLOSE_WAIT, LAST_ACK, CLOSING of a flow open before the agent */
		if (oldstate != TCP_LISTEN)
			flow_of(sk, sock_id, now, 0);
		return 0;
	}
}

/* sendmsg/recvmsg (and read/write/splice on sockets) returned: process context. */
static __always_inline int on_sock_msg(struct sock *sk, __u16 family, __u16 protocol)
{
	__u64 sock_id = (__u64)sk;
	__u64 now;
	struct flow *f;

	if (protocol != IPPROTO_TCP || !is_inet(family) || !sk)
		return 0;
	now = bpf_ktime_get_ns();
	f = flow_of(sk, sock_id, now, 1);
	if (!f)
		return 0;
	if (!f->pid)
		fill_process(f);
	if (is_self(f))
		return 0;
	maybe_snapshot(sk, f, sock_id, now);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int sock_send_length(struct trace_event_raw_sock_msg_length *ctx)
{
	if (!HAVE_SOCK_MSG_LENGTH)
		return 0;
	return on_sock_msg((struct sock *)ctx->sk, ctx->family, ctx->protocol);
}

SEC("tracepoint/sock/sock_recv_length")
int sock_recv_length(struct trace_event_raw_sock_msg_length *ctx)
{
	if (!HAVE_SOCK_MSG_LENGTH)
		return 0;
	return on_sock_msg((struct sock *)ctx->sk, ctx->family, ctx->protocol);
}

/* Retransmit timer or fast retransmit: softirq, pid not touched. */
SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit_skb(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 sock_id = (__u64)sk;
	__u64 now = bpf_ktime_get_ns();
	struct flow *f;

	if (!sk || !is_inet(ctx->family))
		return 0;
	f = flow_of(sk, sock_id, now, 0);
	if (f)
		maybe_snapshot(sk, f, sock_id, now);
	return 0;
}

/* RST sent on a socket (sk is NULL for resets answering no socket, or a
 * listener / TIME_WAIT socket, which are not flows: the lookup misses). */
SEC("tracepoint/tcp/tcp_send_reset")
int tcp_send_reset(void *ctx)
{
	const void *skaddr;
	__u64 sock_id;
	struct flow *f;

	/* Read through bpf_probe_read_kernel, not as ctx loads. Verifier quirk:
	 * clang merges the two loads into one at ctx + (16 or the old offset),
	 * and a ctx pointer with a variable offset may not be dereferenced. */
	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset))
		skaddr = BPF_CORE_READ((struct trace_event_raw_tcp_send_reset *)ctx, skaddr);
	else
		skaddr = BPF_CORE_READ((struct trace_event_raw_tcp_event_sk_skb___old *)ctx, skaddr);
	sock_id = (__u64)skaddr;
	if (!sock_id)
		return 0;
	f = bpf_map_lookup_elem(&flows, &sock_id);
	if (f)
		__sync_fetch_and_add(&f->resets_sent, 1);
	return 0;
}

/* RST received; tcp_reset() then closes the socket (TCP_CLOSE follows). */
SEC("tracepoint/tcp/tcp_receive_reset")
int tcp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 sock_id = (__u64)sk;
	struct flow *f;

	if (!sk)
		return 0;
	f = flow_of(sk, sock_id, bpf_ktime_get_ns(), 0);
	if (f)
		__sync_fetch_and_add(&f->resets_received, 1);
	return 0;
}
