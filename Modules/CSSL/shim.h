// CSSL: the system OpenSSL 3 (libssl-dev) for Swift.
//
// Swift cannot import function-like macros, so every macro the project needs is
// wrapped here in a `static inline` function prefixed `cssl_`.
#ifndef CSSL_SHIM_H
#define CSSL_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <openssl/bio.h>

/// SNI host name (a macro over SSL_ctrl). Returns 1 on success.
static inline long cssl_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}

static inline long cssl_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}

static inline long cssl_SSL_set_mode(SSL *ssl, long mode) {
    return SSL_set_mode(ssl, mode);
}

static inline long cssl_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}

static inline long cssl_BIO_get_mem_data(BIO *bio, char **pp) {
    return BIO_get_mem_data(bio, pp);
}

static inline X509 *cssl_SSL_get_peer_certificate(const SSL *ssl) {
    return SSL_get1_peer_certificate(ssl);
}

static inline uint64_t cssl_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t options) {
    return SSL_CTX_set_options(ctx, options);
}

static inline int cssl_TLS1_2_VERSION(void) { return TLS1_2_VERSION; }
static inline long cssl_SSL_MODE_ENABLE_PARTIAL_WRITE(void) { return SSL_MODE_ENABLE_PARTIAL_WRITE; }
static inline long cssl_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER(void) { return SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; }
static inline long cssl_SSL_MODE_AUTO_RETRY(void) { return SSL_MODE_AUTO_RETRY; }
static inline long cssl_SSL_MODE_RELEASE_BUFFERS(void) { return SSL_MODE_RELEASE_BUFFERS; }
static inline uint64_t cssl_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t cssl_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t cssl_SSL_OP_IGNORE_UNEXPECTED_EOF(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }
static inline unsigned int cssl_X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS(void) { return X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS; }

static inline int cssl_SSL_VERIFY_PEER(void) { return SSL_VERIFY_PEER; }
static inline int cssl_SSL_VERIFY_NONE(void) { return SSL_VERIFY_NONE; }

/// A memory BIO whose reads return -1 with "retry" when empty (the default, made explicit).
static inline BIO *cssl_BIO_new_mem(void) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL) { BIO_set_mem_eof_return(bio, -1); }
    return bio;
}

/// Bytes waiting in a BIO (BIO_ctrl_pending is a function, BIO_pending a macro).
static inline size_t cssl_BIO_pending(BIO *bio) { return BIO_ctrl_pending(bio); }

/// SHA-1 of `len` bytes into `out` (20 bytes) through EVP. Returns 1 on success.
static inline int cssl_sha1(const void *data, size_t len, unsigned char *out) {
    unsigned int outLen = 0;
    return EVP_Digest(data, len, out, &outLen, EVP_sha1(), NULL);
}

static inline int cssl_SSL_FILETYPE_PEM(void) { return SSL_FILETYPE_PEM; }

/// Server side (the emulator): the ALPN callback choosing "http/1.1" when the client offers it; a client
/// that offers only other protocols gets no ALPN answer (the handshake goes on, as with most servers).
static inline int cssl_alpn_select_http11(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                                          const unsigned char *in, unsigned int inlen, void *arg) {
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *selected = NULL;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&selected, outlen, http11, sizeof(http11) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/// Installs ``cssl_alpn_select_http11`` on a server context.
static inline void cssl_SSL_CTX_select_alpn_http11(SSL_CTX *ctx) {
    SSL_CTX_set_alpn_select_cb(ctx, cssl_alpn_select_http11, NULL);
}

#endif
