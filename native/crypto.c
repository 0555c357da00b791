/*
 * AEAD for encrypted networks: AES-256-GCM through the OpenSSL that Node links and exports to addons (no second
 * crypto library), over datagrams in an arena, in place, a batch per call.
 *
 * A sealed VXLAN datagram:
 *   [0, 8)        VXLAN header (flags, VNI): authenticated, not encrypted
 *   [8, 20)       crypto header, written by the caller: key id (1), reserved (3), counter (8, big-endian)
 *   [20, len)     the inner frame, encrypted
 *   [len, len+16) the GCM tag
 * AAD = bytes [0, 20); nonce (12 bytes) = the slot's 4-byte salt || the counter. A slot holds one key and salt;
 * which key a sender and a receiver use, and that a (key, nonce) pair is never used twice, is the caller's part.
 *
 * Contexts are made once per slot with the key set; a datagram only resets the IV (EVP_CipherInit_ex with NULL
 * cipher and key), so a 60-byte frame costs the cipher work and a few calls, not a key schedule.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "vxtap.h"

typedef struct {
  EVP_CIPHER_CTX *enc, *dec;
  uint8_t salt[4];
} slot_t;

static slot_t *slots;
static uint32_t nslots;

int vx_aead_key(uint32_t slot, const uint8_t key[VX_AEAD_KEY], const uint8_t salt[4]) {
  if (slot >= VX_AEAD_SLOTS) return -EINVAL;
  if (slot >= nslots) {
    uint32_t n = nslots ? nslots : 16;
    while (n <= slot) n *= 2;
    if (n > VX_AEAD_SLOTS) n = VX_AEAD_SLOTS;
    slot_t *ns = realloc(slots, (size_t)n * sizeof *ns);
    if (!ns) return -ENOMEM;
    memset(ns + nslots, 0, (size_t)(n - nslots) * sizeof *ns);
    slots = ns;
    nslots = n;
  }
  slot_t *s = &slots[slot];
  if (!s->enc) s->enc = EVP_CIPHER_CTX_new();
  if (!s->dec) s->dec = EVP_CIPHER_CTX_new();
  if (!s->enc || !s->dec) return -ENOMEM;
  const EVP_CIPHER *c = EVP_aes_256_gcm();
  if (EVP_EncryptInit_ex(s->enc, c, NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_SET_IVLEN, VX_AEAD_NONCE, NULL) != 1 ||
      EVP_EncryptInit_ex(s->enc, NULL, NULL, key, NULL) != 1 || EVP_DecryptInit_ex(s->dec, c, NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(s->dec, EVP_CTRL_GCM_SET_IVLEN, VX_AEAD_NONCE, NULL) != 1 ||
      EVP_DecryptInit_ex(s->dec, NULL, NULL, key, NULL) != 1)
    return -EIO;
  memcpy(s->salt, salt, 4);
  return 0;
}

void vx_aead_drop(uint32_t slot) {
  if (slot >= nslots) return;
  EVP_CIPHER_CTX_free(slots[slot].enc);
  EVP_CIPHER_CTX_free(slots[slot].dec);
  memset(&slots[slot], 0, sizeof slots[slot]);
}

static inline void nonce_of(const slot_t *s, const uint8_t *dgram, uint8_t nonce[VX_AEAD_NONCE]) {
  memcpy(nonce, s->salt, 4);
  memcpy(nonce + 4, dgram + VX_AEAD_AAD - 8, 8);
}

/* A descriptor the calls can work on: a known slot, the datagram inside the arena with room for the tag. */
static inline slot_t *desc_slot(const int32_t *m, size_t alen, bool seal) {
  if (m[0] < 0 || m[1] < VX_AEAD_AAD + (seal ? 0 : VX_AEAD_TAG) || m[2] < 0 || (uint32_t)m[2] >= nslots) return NULL;
  size_t end = (size_t)m[0] + (size_t)m[1] + (seal ? VX_AEAD_TAG : 0);
  if (end > alen) return NULL;
  slot_t *s = &slots[m[2]];
  return s->enc ? s : NULL;
}

int32_t vx_aead_seal(uint8_t *arena, size_t alen, int32_t *d, uint32_t count) {
  int32_t ok = 0;
  for (uint32_t i = 0; i < count; i++) {
    int32_t *m = d + (size_t)i * VX_AEAD_STRIDE;
    slot_t *s = desc_slot(m, alen, true);
    if (!s) {
      m[1] = -EINVAL;
      continue;
    }
    uint8_t *p = arena + m[0], nonce[VX_AEAD_NONCE];
    int n = m[1] - VX_AEAD_AAD, outl = 0;
    nonce_of(s, p, nonce);
    if (EVP_EncryptInit_ex(s->enc, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(s->enc, NULL, &outl, p, VX_AEAD_AAD) != 1 ||
        EVP_EncryptUpdate(s->enc, p + VX_AEAD_AAD, &outl, p + VX_AEAD_AAD, n) != 1 ||
        EVP_EncryptFinal_ex(s->enc, p + VX_AEAD_AAD + outl, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_GET_TAG, VX_AEAD_TAG, p + m[1]) != 1) {
      m[1] = -EIO;
      continue;
    }
    m[1] += VX_AEAD_TAG;
    ok++;
  }
  return ok;
}

int32_t vx_aead_open(uint8_t *arena, size_t alen, int32_t *d, uint32_t count) {
  int32_t ok = 0;
  for (uint32_t i = 0; i < count; i++) {
    int32_t *m = d + (size_t)i * VX_AEAD_STRIDE;
    slot_t *s = desc_slot(m, alen, false);
    if (!s) {
      m[1] = -EINVAL;
      continue;
    }
    uint8_t *p = arena + m[0], nonce[VX_AEAD_NONCE];
    int n = m[1] - VX_AEAD_AAD - VX_AEAD_TAG, outl = 0;
    nonce_of(s, p, nonce);
    /* the tag is set before the data: OpenSSL checks it in Final, and nothing decrypted is trusted before then */
    if (EVP_DecryptInit_ex(s->dec, NULL, NULL, NULL, nonce) != 1 ||
        EVP_CIPHER_CTX_ctrl(s->dec, EVP_CTRL_GCM_SET_TAG, VX_AEAD_TAG, p + VX_AEAD_AAD + n) != 1 ||
        EVP_DecryptUpdate(s->dec, NULL, &outl, p, VX_AEAD_AAD) != 1 ||
        EVP_DecryptUpdate(s->dec, p + VX_AEAD_AAD, &outl, p + VX_AEAD_AAD, n) != 1) {
      m[1] = -EIO;
      continue;
    }
    if (EVP_DecryptFinal_ex(s->dec, p + VX_AEAD_AAD + outl, &outl) != 1) {
      m[1] = -EBADMSG; /* wrong key, tampered, truncated: the bytes decrypted in place are garbage; drop them */
      continue;
    }
    m[1] -= VX_AEAD_TAG;
    ok++;
  }
  return ok;
}
