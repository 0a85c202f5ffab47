# dtrotated — rotates Dynatrace API tokens unattended.
# Plain GNU make; libraries come from pkg-config.

VERSION    := 0.1.0
PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
DESTDIR    ?=
PKG_CONFIG ?= pkg-config
CC         ?= cc
CFLAGS     ?= -O2 -g
LDFLAGS    ?=
WERROR     ?= 0
SANITIZE   ?= 0

PKGS := libcurl yajl libconfig libsystemd zlib

B := build

WARNINGS := -Wall -Wextra -Wshadow -Wformat=2 -Wformat-security -Wmissing-prototypes \
            -Wstrict-prototypes -Wpointer-arith -Wundef -Wno-unused-parameter \
            -Wno-missing-field-initializers
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif
HARDEN    := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
LDHARDEN  := -pie -Wl,-z,relro,-z,now

PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS   = $(shell $(PKG_CONFIG) --libs $(PKGS))

ALL_CFLAGS  = -std=gnu11 -D_GNU_SOURCE $(WARNINGS) $(HARDEN) -DVERSION='"$(VERSION)"' -Isrc \
              $(PKG_CFLAGS) $(CFLAGS) $(CPPFLAGS)
ALL_LDFLAGS = $(LDHARDEN) $(LDFLAGS)

# SANITIZE=1 (make check SANITIZE=1): AddressSanitizer, LeakSanitizer and
# UndefinedBehaviorSanitizer, every report fatal. Same compiler as a plain build (gcc:
# clean under -Werror with these flags; its runtime is a shared library found inside
# the service test's sandbox too). _FORTIFY_SOURCE goes: its checked wrappers bypass
# ASan's interceptors. The flags stamp below rebuilds everything on the way in and out.
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ifeq ($(SANITIZE),1)
NOFORTIFY   = $(filter-out -D_FORTIFY_SOURCE%,$(1))
ALL_CFLAGS  = -std=gnu11 -D_GNU_SOURCE $(WARNINGS) $(call NOFORTIFY,$(HARDEN)) -U_FORTIFY_SOURCE $(SANFLAGS) \
              -DVERSION='"$(VERSION)"' -Isrc $(PKG_CFLAGS) $(call NOFORTIFY,$(CFLAGS) $(CPPFLAGS))
else ifneq ($(SANITIZE),0)
$(error SANITIZE must be 0 or 1)
endif

MAIN_SRC := src/dtrotated.c src/dtrotatectl.c
LIB_SRC  := $(filter-out $(MAIN_SRC),$(wildcard src/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(B)/%.o)
# dtrotatectl links only what it needs: the configuration (for the socket and state
# directory), the journal reader and their helpers; no libcurl.
CTL_OBJ  := $(B)/dtrotatectl.o $(B)/dtrotated-config.o $(B)/dtrotated-journal.o $(B)/dtrotated-log.o \
            $(B)/dtrotated-util.o
CTL_PKGS := yajl libconfig libsystemd zlib
UNIT_SRC := $(wildcard tests/unit/test-*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/%)

.PHONY: all tests check valgrind lint demo bench soak deps install uninstall clean

all: dtrotated dtrotatectl

# Rebuild everything when the compiler or the flags change (e.g. WERROR=1 for CI, SANITIZE=1).
$(B)/.flags: FORCE | $(B)
	@echo '$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS)' > $@
FORCE:

$(B):
	@mkdir -p $@

$(B)/%.o: src/%.c $(B)/.flags | $(B)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/test-%.o: tests/unit/test-%.c $(B)/.flags | $(B)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

dtrotated: $(B)/dtrotated.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

dtrotatectl: $(CTL_OBJ)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(shell $(PKG_CONFIG) --libs $(CTL_PKGS))

$(B)/test-%: $(B)/test-%.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka

tests: dtrotated dtrotatectl $(UNIT_BIN)

deps:
	@tests/install-deps

# The README's test command: installs what is missing, builds with -Werror, runs
# every test (unit, integration, service) and prints "N passed, N failed".
check: deps
	$(MAKE) WERROR=1 tests
	tests/run-tests

# Memcheck over the unit tests and over daemon runs against the fake (tests/valgrind).
# A plain build: valgrind and ASan do not mix.
valgrind: deps
ifeq ($(SANITIZE),1)
	$(error make valgrind needs a build without SANITIZE=1)
endif
	$(MAKE) WERROR=1 tests
	tests/valgrind

# Static analysis of src/: cppcheck and clang-tidy with the checked-in configurations
# (.cppcheck-suppressions, .clang-tidy), the build's own -std/-D/-U/-I flags (not
# _FORTIFY_SOURCE, which wants an optimising compile). Any finding fails.
LINT_FLAGS = $(filter-out -D_FORTIFY_SOURCE%,$(filter -std=% -D% -U% -I%,$(ALL_CFLAGS)))
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,style,performance,portability \
		--std=c11 --library=posix --library=gnu --inline-suppr \
		--suppressions-list=.cppcheck-suppressions --template='{file}:{line}: {severity}: {id}: {message}' \
		$(filter -D% -U%,$(LINT_FLAGS)) -Isrc src/*.c
	clang-tidy --quiet $(wildcard src/*.c) -- $(LINT_FLAGS)

demo: deps
	$(MAKE) dtrotated
	tests/demo

bench: deps
	$(MAKE) dtrotated
	tests/bench/run

soak: deps
	$(MAKE) dtrotated
	tests/integration/crash-test --soak
	$(MAKE) soak-load

# 1,000 jobs rotating every 10 s against the fake with faults for LOAD_SECONDS (default
# 600): memory and open fds must stay flat (tests/load/load-test; build/load-report.md).
.PHONY: soak-load
soak-load: deps
	$(MAKE) dtrotated
	tests/load/load-test

UNITDIR     ?= $(shell $(PKG_CONFIG) --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
SYSUSERSDIR ?= $(shell $(PKG_CONFIG) --variable=sysusersdir systemd 2>/dev/null || echo /usr/lib/sysusers.d)
TMPFILESDIR ?= $(shell $(PKG_CONFIG) --variable=tmpfilesdir systemd 2>/dev/null || echo /usr/lib/tmpfiles.d)

install: dtrotated dtrotatectl
	install -D -m 0755 dtrotated $(DESTDIR)$(SBINDIR)/dtrotated
	install -D -m 0755 dtrotatectl $(DESTDIR)$(SBINDIR)/dtrotatectl
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' systemd/dtrotated.service > $(DESTDIR)$(UNITDIR)/dtrotated.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dtrotated.service
	install -m 0644 systemd/sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/dtrotated.conf
	install -m 0644 systemd/tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/dtrotated.conf
	install -D -m 0644 man/dtrotated.8 $(DESTDIR)$(MANDIR)/man8/dtrotated.8
	install -D -m 0644 man/dtrotatectl.8 $(DESTDIR)$(MANDIR)/man8/dtrotatectl.8
	install -D -m 0644 man/dtrotated.conf.5 $(DESTDIR)$(MANDIR)/man5/dtrotated.conf.5
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/dtrotated
	@# Never overwrite an operator's configuration.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/dtrotated/dtrotated.conf ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/dtrotated/dtrotated.conf"; \
		install -m 0644 etc/dtrotated.conf $(DESTDIR)$(SYSCONFDIR)/dtrotated/dtrotated.conf.example; \
	else \
		install -m 0644 etc/dtrotated.conf $(DESTDIR)$(SYSCONFDIR)/dtrotated/dtrotated.conf; \
	fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/dtrotated $(DESTDIR)$(SBINDIR)/dtrotatectl $(DESTDIR)$(MANDIR)/man8/dtrotatectl.8 \
	      $(DESTDIR)$(UNITDIR)/dtrotated.service \
	      $(DESTDIR)$(SYSUSERSDIR)/dtrotated.conf $(DESTDIR)$(TMPFILESDIR)/dtrotated.conf \
	      $(DESTDIR)$(MANDIR)/man8/dtrotated.8 $(DESTDIR)$(MANDIR)/man5/dtrotated.conf.5 \
	      $(DESTDIR)$(SYSCONFDIR)/dtrotated/dtrotated.conf.example
	@echo "left $(DESTDIR)$(SYSCONFDIR)/dtrotated/ and /var/lib/dtrotated/ (configuration, journal) in place"

clean:
	rm -rf $(B) dtrotated dtrotatectl

-include $(wildcard $(B)/*.d)

# Fuzz targets (tests/fuzz/), when present.
-include tests/fuzz/fuzz.mk
