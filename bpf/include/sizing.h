/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0) */
/* Sizes and limits shared by every tracer and by user space (read from BTF there). */
#ifndef OTEL_EBPF_SIZING_H
#define OTEL_EBPF_SIZING_H

/* Largest payload prefix one data event may carry. A power of two: the
 * verifier needs `len & (MAX_CAPTURE_BYTES - 1)` style bounds. The run-time
 * knob max_capture_bytes (default 4 KiB) may only lower it. */
#define MAX_CAPTURE_BYTES 16384

/* iovec entries copied per readv/writev/recvmsg/sendmsg call (grpc C-core writes
 * one frame header, payload and trailer per iovec). Bytes in later
 * entries still count in the event's length, they are just not captured. */
#define MAX_IOV 64

/* Messages of one recvmmsg/sendmmsg call turned into data events. */
#define MAX_MMSG 4

/* In-flight syscalls (one per thread blocked in a traced syscall). */
#define MAX_ACTIVE_CALLS 16384

/* Per-thread slots for data syscalls between entry and exit, indexed by thread
 * id modulo this (the default pid_max: no two threads share a slot there).
 * Threads sharing a slot lose only the entry time of an overlapping call. */
#define MAX_CALL_SLOTS 32768

/* Sockets whose fd -> socket resolution, 4-tuple and filter verdicts are cached
 * (LRU, keyed by struct file). Past it a socket is resolved again in full (~12
 * more reads at its next syscall). Each value is 88 bytes. */
#define MAX_CACHED_SOCKS 16384

/* Sockets whose role (client/server) is known from connect/accept. */
#define MAX_TRACKED_SOCKS 65536

/* The agent's own connections (to ignore the far end of them). */
#define MAX_SELF_CONNS 8192

/* Steps of the HTTP/2 frame walk per syscall (bpf_loop iterations: one per
 * frame header, iovec entry crossed or forwarded piece). 4096 cover a 32 MiB
 * write of 16 KiB frames; past that the connection's frame state is dropped
 * and picked up again at the next frame-aligned syscall. */
#define MAX_H2_STEPS 4096

/* Entries of the pid and port filter maps. */
#define MAX_FILTER_PIDS 1024
#define MAX_FILTER_PORTS 1024

/* TCP connections tracked by tcpflow (one LRU entry per struct sock). Past it
 * the least recently used flow is evicted and reported as partial when it is
 * next seen. Each value is 120 bytes. */
#define MAX_FLOWS 65536

#endif
