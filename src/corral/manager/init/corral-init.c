/*
 * corral-init: the init that `docker run --init` runs as PID 1 of a
 * container (Docker bind-mounts tini at /sbin/docker-init; the engine binds
 * this one there).
 *
 *     corral-init [-s] [--] PROGRAM [ARG...]
 *
 * A process that is PID 1 of a pid namespace gets no default signal
 * handling (the kernel drops signals it has no handler for), and inherits
 * every orphan of the namespace. A shell or a server run as PID 1 often
 * neither dies on SIGTERM nor reaps zombies. So this init:
 *
 *   - blocks every signal, forks, and execs PROGRAM in the child with the
 *     signal mask and dispositions restored;
 *   - waits for signals with sigtimedwait(2): SIGCHLD reaps every zombie
 *     (waitpid(-1, WNOHANG) in a loop), anything else is forwarded to the
 *     child;
 *   - exits, once the child has exited, with its status, or 128+N when
 *     signal N killed it (the shell's convention, which Docker reports);
 *   - when not PID 1 (or with -s), makes itself a child subreaper
 *     (prctl(2) PR_SET_CHILD_SUBREAPER) so orphans still come to it.
 *
 * Built static (`gcc -static -O2`), so it runs in any image; it uses only
 * plain libc calls.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: corral-init [-s] [--] PROGRAM [ARG...]\n");
	exit(1);
}

/* The child: back to the signal state a program expects, then exec. */
static void run_child(char **argv, const sigset_t *saved)
{
	int number;

	for (number = 1; number < NSIG; number++)
		if (number != SIGKILL && number != SIGSTOP)
			signal(number, SIG_DFL);
	sigprocmask(SIG_SETMASK, saved, NULL);
	execvp(argv[0], argv);
	fprintf(stderr, "corral-init: exec %s: %s\n", argv[0], strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

/* Reap every zombie there is; note the child's status when it is one. */
static int reap(pid_t child, int *child_status)
{
	int status, child_done = 0;
	pid_t pid;

	for (;;) {
		pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0) {
			if (pid < 0 && errno == EINTR)
				continue;
			return child_done;
		}
		if (pid == child) {
			*child_status = status;
			child_done = 1;
		}
	}
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

int main(int argc, char **argv)
{
	sigset_t all, saved;
	struct timespec tick = { 1, 0 };
	int first = 1, subreaper = 0, status = 0, number;
	pid_t child;

	while (first < argc && argv[first][0] == '-') {
		if (strcmp(argv[first], "--") == 0) {
			first++;
			break;
		}
		if (strcmp(argv[first], "-s") == 0)
			subreaper = 1;
		else
			usage();
		first++;
	}
	if (first >= argc)
		usage();
	if ((subreaper || getpid() != 1) &&
	    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		fprintf(stderr, "corral-init: prctl PR_SET_CHILD_SUBREAPER: %s\n",
			strerror(errno));

	/* Blocked before the fork, so no signal is lost between the fork and
	 * the first sigtimedwait; fatal synchronous signals stay deliverable. */
	sigfillset(&all);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGABRT);
	if (sigprocmask(SIG_SETMASK, &all, &saved) < 0) {
		perror("corral-init: sigprocmask");
		return 1;
	}
	child = fork();
	if (child < 0) {
		perror("corral-init: fork");
		return 1;
	}
	if (child == 0)
		run_child(argv + first, &saved);

	for (;;) {
		number = sigtimedwait(&all, NULL, &tick);
		if (number < 0 && errno != EAGAIN && errno != EINTR) {
			perror("corral-init: sigtimedwait");
			return 1;
		}
		/* The child may have died from a signal we forwarded but never
		 * saw SIGCHLD for (coalesced): reap on every wake-up. */
		if (number > 0 && number != SIGCHLD)
			kill(child, number);
		if (reap(child, &status))
			return exit_code(status);
	}
}
