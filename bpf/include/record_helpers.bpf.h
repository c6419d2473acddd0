/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0) */
/* Counters and ring-buffer wakeups, the same in every tracer. Include after declaring the
 * tracer's `events` ring buffer, its per-CPU `stats` array and the `wakeup_bytes` knob. */
#ifndef OTEL_EBPF_RECORD_HELPERS_BPF_H
#define OTEL_EBPF_RECORD_HELPERS_BPF_H

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

static __always_inline __u64 rb_flags(void)
{
	/* Records go in without waking the reader; it polls on a short timeout
	 * and is woken early only when the backlog passes wakeup_bytes. One
	 * wakeup per record costs ~1.5 us per syscall on this class of machine. */
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

#endif
