/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0) */
/* sockdata: the data shared between sockdata.bpf.c and user space.
 * User space builds its decoders from this object's BTF (otel_ebpf.bpf.btf),
 * so field names here are the contract; numbers mirror otel_ebpf.bpf.events. */
#ifndef OTEL_EBPF_SOCKDATA_H
#define OTEL_EBPF_SOCKDATA_H

#include "../include/conn_tuple.h"

/* Record type tags: every ring-buffer record starts with one (EventType in Python). */
enum event_type {
	EVENT_SOCK_DATA = 1,  /* payload of one read/write-family syscall */
	EVENT_CONN_OPEN = 2,  /* accept/accept4/connect returned a TCP socket */
	EVENT_CONN_CLOSE = 3, /* close() of a TCP socket */
};

/* Direction seen from the process (Direction in Python). */
enum direction {
	DIR_EGRESS = 0,
	DIR_INGRESS = 1,
};

/* Role of the process on the connection (Role in Python). */
enum conn_role {
	ROLE_UNKNOWN = 0,
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

/* Which syscall produced a data event (Syscall in Python). */
enum syscall_id {
	SYS_READ = 1, SYS_WRITE, SYS_READV, SYS_WRITEV, SYS_RECVFROM, SYS_SENDTO,
	SYS_RECVMSG, SYS_SENDMSG, SYS_RECVMMSG, SYS_SENDMMSG, SYS_SENDFILE,
};

/* Indexes of the per-CPU `stats` array (Stat in Python). */
enum stat_index {
	STAT_EVENTS = 0,         /* records submitted */
	STAT_LOST = 1,           /* record dropped: ring buffer full, or the reservation refused */
	STAT_ACTIVE_FULL = 2,    /* in-flight call table full: call not traced (kept for user space:
	                          * the per-thread slots never refuse a call, see `calls`) */
	STAT_TRUNCATED = 3,      /* data events whose payload exceeded the capture */
	STAT_SELF_SKIPPED = 4,   /* calls of the agent itself or of the far end of its sockets */
	STAT_H2_FORWARDED = 5,   /* truncated data events that carry HTTP/2 frames past the capture */
	STAT_LOST_WITH_ROOM = 6, /* of STAT_LOST: the ring had room for the record when it was refused */
	STAT_MAX = 7,
};

struct sock_data_event {
	__u32 type; /* EVENT_SOCK_DATA */
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u64 ts_enter; /* CLOCK_MONOTONIC ns at syscall entry; == ts_exit for reads unless
	                 * the tracer is asked for their entry times (knob ingress_enter) */
	__u64 ts_exit;  /* ... and at exit */
	__u64 sock_id;  /* kernel address of struct sock */
	__u32 len;      /* bytes the syscall moved (its return value, per message for mmsg) */
	__u32 captured; /* bytes of payload that follow this header */
	__u8 direction;
	__u8 role;
	__u8 syscall;
	__u8 proto; /* 6: TCP; 17: UDP (only DNS sockets: a port is 53) */
	/* 0: `data` is the payload's first `captured` bytes. Otherwise the first
	 * `ext_offset` bytes of `data` are the payload's head and data segments
	 * (struct data_segment + bytes) follow, up to `captured`: parts of the
	 * payload past the head, at their offsets in it (HTTP/2 frame headers and
	 * non-DATA frames of a truncated syscall, see h2_walk). */
	__u32 ext_offset;
	struct conn_tuple tuple;
	__u32 total_retrans; /* TCP: the connection's retransmitted segments so far */
	__u32 srtt_us;       /* TCP: its smoothed RTT (0: no sample yet) */
	__u8 data[]; /* `captured` bytes */
};

/* One part of a syscall's payload past the captured head; `size` bytes follow. */
struct data_segment {
	__u32 offset; /* in the syscall's payload */
	__u32 size;
};

struct conn_event {
	__u32 type; /* EVENT_CONN_OPEN or EVENT_CONN_CLOSE */
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u64 ts;
	__u64 sock_id;
	__u8 role;
	__u8 _pad[7];
	struct conn_tuple tuple;
	char comm[16]; /* task comm: names short-lived clients gone before /proc is read */
};

/* Run-time filters (array map `filter_cfg`, one entry); apply without reload. */
struct filter_config {
	__u32 pid_filter;  /* 1: only tgids in `filter_pids` */
	__u32 port_filter; /* 1: only connections whose local or remote port is in `filter_ports` */
	__u32 generation;  /* bumped by user space at every change: cached port verdicts are redone */
};

#endif
