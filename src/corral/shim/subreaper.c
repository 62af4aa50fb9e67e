/*
 * corral-subreaper: start a shim detached and as a child subreaper.
 *
 *   corral-subreaper --detach PROGRAM [ARG...]
 *
 * Forks; the parent exits at once (so the shim is nobody's child), and the
 * child starts a new session, moves to /, becomes a child subreaper
 * (PR_SET_CHILD_SUBREAPER, which survives execve, so the container's init
 * is reparented to it when the runtime exits) and execs PROGRAM.
 *
 * corral-shim can do all of this itself, but only by starting Python twice
 * (the prctl needs ctypes, which it does not keep loaded). This saves one
 * Python start on every container start. scripts/setup builds it; without
 * it the shim detaches on its own.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "--detach") != 0) {
        fputs("usage: corral-subreaper --detach PROGRAM [ARG...]\n", stderr);
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "corral-subreaper: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid > 0)
        return 0;
    if (setsid() < 0 || chdir("/") < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        fprintf(stderr, "corral-subreaper: %s\n", strerror(errno));
        _exit(1);
    }
    execv(argv[2], argv + 2);
    fprintf(stderr, "corral-subreaper: exec '%s': %s\n", argv[2], strerror(errno));
    _exit(127);
}
