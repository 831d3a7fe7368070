/*
 * What the fuzz targets share: a private scratch directory for the parsers that read
 * files, an error sink that formats every message (so a bad format argument is caught
 * even where no front door installs one), and an in-process ctok provider for the
 * decoder targets. Each target is one LLVMFuzzerTestOneInput in fuzz_<parser>.c.
 */
#ifndef CTOK_FUZZ_COMMON_H
#define CTOK_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/decoder.h>
#include <openssl/types.h>

/* libFuzzer's entry points: fuzz_common.c has LLVMFuzzerInitialize, which calls fuzz_init. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);
/* Each target's set-up, once before the first input (errors already go to the sink). */
void fuzz_init(void);

/* The scratch directory (mode 0700), made once: under $CTOK_FUZZ_TMPDIR, else /tmp. */
const char *fuzz_dir(void);
/* dir/name in a static buffer that lives for the process (init-time use only). */
const char *fuzz_path(const char *name);
/* Writes data to path (created 0600, truncated); aborts on an I/O error. */
void fuzz_write(const char *path, const uint8_t *data, size_t len);
/* A NUL-terminated copy of the input (free() it). */
char *fuzz_cstr(const uint8_t *data, size_t len);
/* A field bound for a one-line message: dies unless NUL-terminated within cap and free of
 * control characters (the cloud error parsers' promise). */
void fuzz_check_field(const char *s, size_t cap);
/* Ends the process with a message: a harness whose setup fails would fuzz nothing. */
void fuzz_die(const char *what) __attribute__((noreturn));

/* The keystores' PIN, also in the auth files the targets write. */
#define FUZZ_PIN "fuzz-pin-4711"
/* A keystore (0600) with an EC key and its self-signed certificate, both named "key". */
void fuzz_make_keystore(const char *path);
/* The same with the key pkey (taken; NULL: the setup fails). */
void fuzz_make_keystore_of(const char *path, EVP_PKEY *pkey);

/*
 * A library context with ctok registered as a built-in provider and loaded next to
 * `default`, reading a config that holds one pkcs12 token "fuzz" (auth from a 0600 file)
 * whose keystore has an EC key and its certificate under the alias "key". Made once.
 */
OSSL_LIB_CTX *fuzz_provider_libctx(void);
/*
 * A decoder context of that library context for keys into *pkey, made once and reused
 * by every input as applications reuse theirs: making one collects the decoders and key
 * managers of both providers (about 6 ms), which would be nearly all of each execution.
 * Checked: a reference to the token's key decodes to a key, else the process stops.
 */
OSSL_DECODER_CTX *fuzz_decoder(EVP_PKEY **pkey, const char *input, const char *structure,
                               const char *keytype);

/* Reads a string to its end (ASan sees an unterminated one); NULL is fine. */
void fuzz_touch(const char *s);

#endif
