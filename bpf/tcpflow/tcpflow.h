/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0) */
/* tcpflow: the data shared between tcpflow.bpf.c and user space.
 * User space builds its decoder from this object's BTF (otel_ebpf.bpf.btf),
 * so field names here are the contract; numbers mirror otel_ebpf.bpf.tcpflow. */
#ifndef OTEL_EBPF_TCPFLOW_H
#define OTEL_EBPF_TCPFLOW_H

#include "../include/conn_tuple.h"

/* Record type tags (FlowEventType in Python). Numbered apart from sockdata's
 * event_type so that records of both tracers can never be mistaken. */
enum flow_event_type {
	EVENT_TCP_FLOW = 16, /* one struct tcp_flow_event */
};

/* What a record says about its flow (FlowState in otel_ebpf.records, by name). */
enum flow_state {
	FLOW_ACTIVE = 0, /* snapshot of a connection still open */
	FLOW_CLOSED = 1, /* reached ESTABLISHED, now closed */
	FLOW_FAILED = 2, /* closed before ESTABLISHED (a failed connect) */
};

/* Role of this host on the connection (Role in Python). */
enum flow_role {
	ROLE_UNKNOWN = 0, /* open before the agent: first seen mid-life */
	ROLE_CLIENT = 1,  /* SYN_SENT seen */
	ROLE_SERVER = 2,  /* SYN_RECV -> ESTABLISHED seen */
};

/* Indexes of the per-CPU `stats` array (FlowStat in Python). */
enum flow_stat_index {
	STAT_EVENTS = 0,        /* records submitted */
	STAT_LOST = 1,          /* ring buffer full: record dropped */
	STAT_FLOWS_FULL = 2,    /* flow table update failed: flow not tracked */
	STAT_FLOWS_OPENED = 3,  /* flows tracked from their connect / establishment */
	STAT_FLOWS_PARTIAL = 4, /* flows first seen mid-life (open before the agent, or evicted) */
	STAT_SNAPSHOTS = 5,     /* ACTIVE records submitted (part of EVENTS) */
	STAT_SELF_SKIPPED = 6,  /* records not sent: the flow belongs to the agent */
	STAT_MAX = 7,
};

/* One record per flow event: a snapshot (ACTIVE) or the final summary
 * (CLOSED/FAILED). Counters are totals since the connection opened; bytes are
 * payload bytes only (the SYN and FIN sequence numbers that tcp_sock's RFC 4898
 * counters include are taken out, see read_counters() in tcpflow.bpf.c). */
struct tcp_flow_event {
	__u32 type;         /* EVENT_TCP_FLOW */
	__u32 pid;          /* tgid; 0: not seen in process context yet */
	__u64 flow_id;      /* kernel address of struct sock */
	__u64 cgroup_id;    /* cgroup v2 id of the socket (0: unknown) */
	__u64 ts_start;     /* CLOCK_MONOTONIC ns: connect / establishment / first sight */
	__u64 ts;           /* ... of this record */
	__u64 bytes_sent;   /* payload bytes acknowledged by the peer */
	__u64 bytes_received;
	/* Counters when the flow was first seen (0 unless `partial`): the base for
	 * the first interval of a flow open before the agent. */
	__u64 base_bytes_sent;
	__u64 base_bytes_received;
	__u32 base_retrans;
	__u32 segs_out;
	__u32 segs_in;
	__u32 total_retrans; /* retransmitted segments */
	__u32 srtt_us;       /* smoothed RTT, us (0: no sample) */
	__u32 min_rtt_us;
	__u32 resets_sent;
	__u32 resets_received;
	__s32 sk_err;        /* CLOSED/FAILED: sk->sk_err at close (positive errno, 0: none) */
	__u8 state;          /* enum flow_state */
	__u8 role;           /* enum flow_role */
	__u8 partial;        /* 1: first seen mid-life, counters include earlier traffic */
	__u8 tcp_state;      /* TCP state: before CLOSE for a final record, current for a snapshot */
	struct conn_tuple tuple;
	char comm[16];
};

#endif
