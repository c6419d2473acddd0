/* SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0) */
/* The connection 4-tuple both tracers put in their records (decoded from BTF by user space). */
#ifndef OTEL_EBPF_CONN_TUPLE_H
#define OTEL_EBPF_CONN_TUPLE_H

/* Addresses in network byte order; IPv4 in the first 4 bytes of saddr/daddr. */
struct conn_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;  /* host order (local port) */
	__u16 dport;  /* host order (remote port) */
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 _pad;
};

#endif
