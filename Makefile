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

PKGS := libcurl yajl libconfig libsystemd

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

MAIN_SRC := src/dtrotated.c
LIB_SRC  := $(filter-out $(MAIN_SRC),$(wildcard src/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(B)/%.o)
UNIT_SRC := $(wildcard tests/unit/test-*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/%)

.PHONY: all tests check demo bench soak deps install uninstall clean

all: dtrotated

# Rebuild everything when the flags change (e.g. WERROR=1 for CI).
$(B)/.flags: FORCE | $(B)
	@echo '$(ALL_CFLAGS) $(ALL_LDFLAGS)' | cmp -s - $@ || echo '$(ALL_CFLAGS) $(ALL_LDFLAGS)' > $@
FORCE:

$(B):
	@mkdir -p $@

$(B)/%.o: src/%.c $(B)/.flags | $(B)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/test-%.o: tests/unit/test-%.c $(B)/.flags | $(B)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

dtrotated: $(B)/dtrotated.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(B)/test-%: $(B)/test-%.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka

tests: dtrotated $(UNIT_BIN)

deps:
	@tests/install-deps

# The README's test command: installs what is missing, builds with -Werror, runs
# every test (unit, integration, service) and prints "N passed, N failed".
check: deps
	$(MAKE) WERROR=1 tests
	tests/run-tests

demo: deps
	$(MAKE) dtrotated
	tests/demo

bench: deps
	$(MAKE) dtrotated
	tests/bench/run

soak: deps
	$(MAKE) dtrotated
	tests/integration/crash-test --soak

install: dtrotated
	install -D -m 0755 dtrotated $(DESTDIR)$(SBINDIR)/dtrotated

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/dtrotated

clean:
	rm -rf $(B) dtrotated

-include $(wildcard $(B)/*.d)
