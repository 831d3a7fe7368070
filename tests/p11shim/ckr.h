/* CKR_* names <-> codes (ckr.c), shared by the shim module and its test driver. */
#ifndef CTOK_P11SHIM_CKR_H
#define CTOK_P11SHIM_CKR_H

#include <stddef.h>

#include <p11-kit/pkcs11.h>

#define SHIM_CKR_BUFLEN 24

/* The CKR_* name of rv, or "0x<hex>" (written to buf) for a code without one. */
const char *shim_ckr_name(CK_RV rv, char buf[SHIM_CKR_BUFLEN]);

/* Parses a CKR_* name or a number (the first len bytes of s); 1 on success. */
int shim_ckr_parse(const char *s, size_t len, CK_RV *rv);

#endif
