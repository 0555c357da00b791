/*
 * VTEP addresses as the batch calls carry them: one uint32 per datagram, whatever the underlay's family.
 *
 * An IPv4 VTEP is its address (host order). An IPv6 VTEP is a small id, 1 .. VX_VTEP6_MAX, which JS gives it
 * when it first parses the address (src/common/vtep.ts) and registers here with vx_vtep6_set. The ids live in
 * 0.0.0.0/8, which is never the address of an IPv4 VTEP ("this network", RFC 1122), so one number names either
 * family without a tag, and everything above the socket (FDB, flood lists, the receive path's "known VTEP?" check)
 * works on numbers as before. Here the id becomes a sockaddr_in6 for a send, and a received datagram's IPv6
 * source becomes its id (0 if JS never registered it: the receive path then counts it as an unknown VTEP).
 *
 * The table only grows: an id stays valid for the process's life, so a descriptor queued with it can never reach
 * another address. Its size is the number of distinct IPv6 VTEPs the agent has seen, one per host of the cluster.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vxtap.h"

static uint8_t (*addrs)[16]; /* addrs[id]: the address of id (addrs[0] unused) */
static uint32_t addrs_cap;   /* entries addrs has room for */
static uint32_t *slots;      /* open addressing: ids, 0 = empty; hash of the address, linear probing */
static uint32_t slots_mask;  /* capacity - 1 (a power of two) */
static uint32_t used;        /* ids registered */

/* :: (never a VTEP) marks an unused id */
static bool is_unset(const uint8_t a[16]) {
  static const uint8_t zero[16];
  return memcmp(a, zero, 16) == 0;
}

static uint32_t hash16(const uint8_t a[16]) {
  uint64_t x, y;
  memcpy(&x, a, 8);
  memcpy(&y, a + 8, 8);
  x ^= y * 0x9e3779b97f4a7c15ULL;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 32;
  return (uint32_t)x;
}

static void slot_put(uint32_t *tab, uint32_t mask, uint32_t id) {
  uint32_t h = hash16(addrs[id]) & mask;
  while (tab[h]) h = (h + 1) & mask;
  tab[h] = id;
}

uint32_t vx_vtep6_id(const uint8_t a[16]) {
  if (!slots) return 0;
  for (uint32_t h = hash16(a) & slots_mask;; h = (h + 1) & slots_mask) {
    uint32_t id = slots[h];
    if (!id) return 0;
    if (memcmp(addrs[id], a, 16) == 0) return id;
  }
}

int vx_vtep6_set(uint32_t id, const uint8_t a[16]) {
  if (id == 0 || id > VX_VTEP6_MAX || is_unset(a)) return -EINVAL;
  if (id < addrs_cap && !is_unset(addrs[id])) return memcmp(addrs[id], a, 16) == 0 ? 0 : -EEXIST; /* never moves */
  if (vx_vtep6_id(a)) return -EEXIST; /* one id per address */
  if (id >= addrs_cap) {
    uint32_t cap = addrs_cap ? addrs_cap : 64;
    while (cap <= id) cap *= 2;
    uint8_t(*na)[16] = realloc(addrs, (size_t)cap * 16);
    if (!na) return -ENOMEM;
    memset(na + addrs_cap, 0, (size_t)(cap - addrs_cap) * 16);
    addrs = na;
    addrs_cap = cap;
  }
  /* keep the load at most one half: grow (and re-place every id) before adding */
  if (!slots || (used + 1) * 2 > slots_mask + 1) {
    uint32_t n = slots ? (slots_mask + 1) * 2 : 128;
    uint32_t *ns = calloc(n, sizeof *ns);
    if (!ns) return -ENOMEM;
    if (slots)
      for (uint32_t i = 0; i <= slots_mask; i++)
        if (slots[i]) slot_put(ns, n - 1, slots[i]);
    free(slots);
    slots = ns;
    slots_mask = n - 1;
  }
  memcpy(addrs[id], a, 16);
  slot_put(slots, slots_mask, id);
  used++;
  return 0;
}

socklen_t vx_vtep_sockaddr(uint32_t vtep, uint16_t port, vx_sockaddr *out) {
  memset(out, 0, sizeof *out);
  if (vtep > VX_VTEP6_MAX) {
    out->in4.sin_family = AF_INET;
    out->in4.sin_port = htons(port);
    out->in4.sin_addr.s_addr = htonl(vtep);
    return sizeof out->in4;
  }
  if (vtep == 0 || vtep >= addrs_cap || is_unset(addrs[vtep])) return 0;
  out->in6.sin6_family = AF_INET6;
  out->in6.sin6_port = htons(port);
  memcpy(&out->in6.sin6_addr, addrs[vtep], 16);
  return sizeof out->in6;
}

uint32_t vx_vtep_of(const vx_sockaddr *sa, uint16_t *port) {
  if (sa->sa.sa_family == AF_INET6) {
    *port = ntohs(sa->in6.sin6_port);
    return vx_vtep6_id(sa->in6.sin6_addr.s6_addr);
  }
  *port = ntohs(sa->in4.sin_port);
  return ntohl(sa->in4.sin_addr.s_addr);
}
