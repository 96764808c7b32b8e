// epoll for the WebSocket module's event loop (IOLoop.swift). Glibc's Swift module does not bring in
// <sys/epoll.h>, and `struct epoll_event` is packed on x86_64, so the loop calls these wrappers, which
// take and give plain integers.
#ifndef CEPOLL_SHIM_H
#define CEPOLL_SHIM_H
#ifdef __linux__
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

static const uint32_t CEPOLL_IN = EPOLLIN;
static const uint32_t CEPOLL_OUT = EPOLLOUT;
static const uint32_t CEPOLL_ERR = EPOLLERR;
static const uint32_t CEPOLL_HUP = EPOLLHUP;
static const uint32_t CEPOLL_RDHUP = EPOLLRDHUP;

static inline int cepoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

/// EPOLL_CTL_ADD (op 0), EPOLL_CTL_MOD (op 1) or EPOLL_CTL_DEL (op 2) of `fd`, tagged with `tag`.
static inline int cepoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t tag) {
    struct epoll_event e;
    e.events = events;
    e.data.u64 = tag;
    int ops[3] = {EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL};
    if (op < 0 || op > 2) { errno = EINVAL; return -1; }
    return epoll_ctl(epfd, ops[op], fd, &e);
}

/// Waits for at most `max` (<= 64) events; writes each one's events and tag. Returns the count, or -1.
static inline int cepoll_wait(int epfd, uint32_t *events, uint64_t *tags, int max, int timeout_ms) {
    struct epoll_event list[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, list, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        events[i] = list[i].events;
        tags[i] = list[i].data.u64;
    }
    return n;
}

static inline int cepoll_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }
#endif
#endif
