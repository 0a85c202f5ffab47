/* SPDX-License-Identifier: MIT */
/* dtrotated: rotates Dynatrace API tokens unattended. */
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <syslog.h>

#include "dtrotated-check.h"
#include "dtrotated-config.h"
#include "dtrotated-log.h"
#include "dtrotated-manager.h"

typedef struct Args {
        const char *config;
        bool check_config;
        bool online;
        bool dry_run;
        bool show_state;
        bool once;
        bool to_stderr;
        bool debug;
} Args;

static void usage(FILE *f) {
        fprintf(f,
                "Usage: dtrotated [-c FILE] [--check-config [--online] | --show-state | --dry-run] [--once] [--stderr] [--debug]\n"
                "       dtrotated --version | --help\n"
                "\n"
                "Rotates Dynatrace API tokens: creates a new token, writes it to its file,\n"
                "revokes the old one and deletes it after a grace period.\n"
                "\n"
                "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG_FILE ")\n"
                "  -n, --check-config check the configuration, print every problem, exit\n"
                "      --online       with --check-config: also look up every token and check\n"
                "                     the management tokens' scopes with the API\n"
                "  -S, --show-state   print what the journal says (read-only), exit\n"
                "      --dry-run      look up every token, print what would be done and when,\n"
                "                     change nothing, exit\n"
                "  -1, --once         do what is due now, then exit (for cron/timers)\n"
                "  -s, --stderr       also log to standard error\n"
                "  -d, --debug        log debug messages too\n"
                "  -V, --version      print the version\n"
                "  -h, --help         print this help\n"
                "\n"
                "Exit status: 0 ok, 1 runtime failure, 64 usage error, 65 damaged journal,\n"
                "78 configuration error.\n"
                "See dtrotated(8) and dtrotated.conf(5).\n");
}

static int parse_args(int argc, char **argv, Args *a) {
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'n' },
                { "show-state", no_argument, NULL, 'S' },
                { "online", no_argument, NULL, 'O' },
                { "dry-run", no_argument, NULL, 'D' },
                { "once", no_argument, NULL, '1' },
                { "stderr", no_argument, NULL, 's' },
                { "debug", no_argument, NULL, 'd' },
                { "version", no_argument, NULL, 'V' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        *a = (Args) { .config = DEFAULT_CONFIG_FILE };
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":c:nS1sdVh", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        a->config = optarg;
                        break;
                case 'n':
                        a->check_config = true;
                        break;
                case 'S':
                        a->show_state = true;
                        break;
                case 'O':
                        a->online = true;
                        break;
                case 'D':
                        a->dry_run = true;
                        break;
                case '1':
                        a->once = true;
                        break;
                case 's':
                        a->to_stderr = true;
                        break;
                case 'd':
                        a->debug = true;
                        break;
                case 'V':
                        printf("dtrotated " VERSION "\n");
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                case ':':
                        fprintf(stderr, "dtrotated: option %s needs an argument\n", argv[optind - 1]);
                        usage(stderr);
                        return -1;
                default:
                        fprintf(stderr, "dtrotated: unknown option %s\n", argv[optind - 1]);
                        usage(stderr);
                        return -1;
                }
        if (optind < argc) {
                fprintf(stderr, "dtrotated: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return -1;
        }
        if (a->online && !a->check_config) {
                fprintf(stderr, "dtrotated: --online needs --check-config\n");
                return -1;
        }
        if (a->dry_run + a->check_config + a->show_state + a->once > 1) {
                fprintf(stderr, "dtrotated: --dry-run, --check-config, --show-state and --once exclude each other\n");
                return -1;
        }
        return 1;
}

static void print_problem(int prio, const char *msg, void *userdata) {
        fprintf(stderr, "%s%s\n", prio == LOG_WARNING ? "warning: " : "", msg);
}

static void log_problem(int prio, const char *msg, void *userdata) {
        log_full(prio, 0, "%s", msg);
}

static int check_config(const char *path, bool online) {
        _cleanup_(config_freep) Config *c = NULL;
        int r = config_load(path, &c, print_problem, NULL);

        if (r < 0)
                return EXIT_CONFIG;
        /* Token files that would make their jobs fail at run time (the daemon itself runs
         * the other jobs). */
        if (config_check_files(c, print_problem, NULL) < 0)
                return EXIT_CONFIG;
        if (online) {
                r = api_global_init();
                if (r >= 0) {
                        r = online_check(c, print_problem, NULL);
                        api_global_cleanup();
                }
                if (r == -EINVAL)
                        return EXIT_CONFIG;
                if (r < 0) {
                        fprintf(stderr, "%s: cannot check online: %s\n", path, strerror(-r));
                        return EXIT_RUNTIME;
                }
        }
        printf("%s: OK: %zu token%s in %zu environment%s, state in %s%s\n", path, c->n_jobs,
               c->n_jobs == 1 ? "" : "s", c->n_envs, c->n_envs == 1 ? "" : "s", c->state_directory,
               online ? "; every token looked up" : "");
        return 0;
}

static int show_state(const char *path) {
        Config *c = NULL;
        int r = config_load(path, &c, print_problem, NULL);

        if (r < 0)
                return EXIT_CONFIG;
        r = manager_show_state(c, stdout); /* takes c */
        return r == -EBADMSG ? EXIT_JOURNAL : r < 0 ? EXIT_RUNTIME : 0;
}

static int do_dry_run(const char *path) {
        _cleanup_(config_freep) Config *c = NULL;
        int r = config_load(path, &c, print_problem, NULL);

        if (r < 0)
                return EXIT_CONFIG;
        r = api_global_init();
        if (r >= 0) {
                r = dry_run(c, stdout);
                api_global_cleanup();
        }
        if (r == -EBADMSG)
                return EXIT_JOURNAL;
        if (r < 0 && r != -EIO)
                fprintf(stderr, "%s: dry run failed: %s\n", path, strerror(-r));
        return r < 0 ? EXIT_RUNTIME : 0;
}

/* A daemon started with stdin, stdout or stderr closed would hand those numbers to the
 * first files it opens, and a stray write would land in the journal or a token file. */
static void fix_std_fds(void) {
        for (int fd = 0; fd <= 2; fd++)
                if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
                        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
                        if (n >= 0 && n != fd) {
                                (void) dup2(n, fd);
                                (void) close(n);
                        }
                }
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        Config *config = NULL;
        Args a;
        int r;

        fix_std_fds();
        /* A reader of our stderr that goes away (`... | head`) must not kill the daemon. */
        (void) signal(SIGPIPE, SIG_IGN);
        /* Secrets live in this process's memory: no core dumps, no ptrace by others. */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

        r = parse_args(argc, argv, &a);
        if (r <= 0)
                return r == 0 ? 0 : EXIT_USAGE;
        if (a.check_config)
                return check_config(a.config, a.online);
        if (a.dry_run)
                return do_dry_run(a.config);
        if (a.show_state)
                return show_state(a.config);

        log_setup(a.to_stderr);
        log_set_max_level(a.debug ? LOG_DEBUG : LOG_INFO);
        /* Before any other libcurl call: its allocations then go through allocators that
         * wipe what they free (request headers hold the management token). */
        r = api_global_init();
        if (r < 0) {
                log_error_errno(r, "Cannot initialise libcurl: %m");
                return EXIT_RUNTIME;
        }

        r = config_load(a.config, &config, log_problem, NULL);
        if (r < 0) {
                log_error("Configuration %s is not valid; not starting", a.config);
                return EXIT_CONFIG;
        }
        /* manager_new() takes the configuration, also when it fails. */
        r = manager_new(a.config, config, a.once, &m);
        if (r < 0) {
                log_error_errno(r, "Not starting: %m");
                return r == -EBADMSG ? EXIT_JOURNAL : EXIT_RUNTIME;
        }
        r = manager_run(m);
        m = manager_free(m);
        api_global_cleanup();
        return r;
}
