/* pause: the whole test image. Sleeps until SIGTERM or SIGINT and exits 0.
 * As PID 1 in a container, signals without a handler are ignored, so handle
 * them explicitly: `docker stop` then returns at once instead of after 10 s. */
#include <signal.h>
#include <unistd.h>

static volatile sig_atomic_t done = 0;

static void on_signal(int sig) { (void)sig; done = 1; }

int main(void) {
    struct sigaction sa;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    while (!done)
        pause();
    return 0;
}
