/*
 * LD_PRELOAD shim: sets TCP_NODELAY on every TCP socket just before the
 * program connects it, for measuring a client that does not set it
 * itself (lettre 0.11) without changing the client.
 *
 * Build: gcc -shared -fPIC -O2 -o libnodelay.so nodelay.c -ldl
 * Use:   LD_PRELOAD=/path/to/libnodelay.so program ...
 *
 * Only connect(2) called through the C library is seen; a program that
 * makes the system call directly is not affected. When
 * NODELAY_SHIM_REPORT names a file, each socket the shim changed is
 * appended to it as one line, so a caller can check that the shim ran.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static void report(int fd)
{
    const char *path = getenv("NODELAY_SHIM_REPORT");
    if (path == NULL || *path == '\0')
        return;
    int out = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out < 0)
        return;
    char line[64];
    int length = snprintf(line, sizeof line, "nodelay fd=%d\n", fd);
    if (length > 0)
        (void)!write(out, line, (size_t)length);
    close(out);
}

int connect(int fd, const struct sockaddr *address, socklen_t length)
{
    static connect_fn real_connect;
    if (real_connect == NULL) {
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
        if (real_connect == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }

    if (address != NULL && (address->sa_family == AF_INET || address->sa_family == AF_INET6)) {
        int type = 0;
        socklen_t type_length = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) == 0 && type == SOCK_STREAM) {
            /* errno must reach the caller as connect(2) leaves it. */
            int saved = errno;
            int one = 1;
            if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
                report(fd);
            errno = saved;
        }
    }
    return real_connect(fd, address, length);
}
