# tests/fuzz/fuzz.mk: libFuzzer targets (clang from Debian), included by the Makefile.
# See tests/fuzz/README.md.
#
#   make fuzz [FUZZ_SECONDS=600] [FUZZ_TARGETS="fuzz-api ..."]
#       runs each target for FUZZ_SECONDS, one after the other; a crasher is saved in
#       tests/fuzz/regressions/TARGET/ and fails the run
#   make fuzz-regress
#       replays every seed and every saved regression input through each target once
#   make fuzz-build, make fuzz-seeds

FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= fuzz-config fuzz-journal fuzz-api fuzz-token-file
FB           := build/fuzz

FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS   = -std=gnu11 -D_GNU_SOURCE $(WARNINGS) -DVERSION='"$(VERSION)"' -Isrc -Itests/fuzz \
                $(PKG_CFLAGS) -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN)
FUZZ_LIB_OBJ := $(LIB_SRC:src/%.c=$(FB)/%.o)
FUZZ_ALL     := fuzz-config fuzz-journal fuzz-api fuzz-token-file
FUZZ_BIN     := $(FUZZ_ALL:%=$(FB)/%)

.PHONY: fuzz fuzz-build fuzz-seeds fuzz-regress fuzz-clean

$(FB):
	@mkdir -p $@

$(FB)/.flags: FORCE | $(FB)
	@echo '$(FUZZ_CC) $(FUZZ_CFLAGS)' | cmp -s - $@ || echo '$(FUZZ_CC) $(FUZZ_CFLAGS)' > $@

$(FB)/%.o: src/%.c $(FB)/.flags | $(FB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FB)/fuzz-%.o: tests/fuzz/fuzz-%.c $(FB)/.flags | $(FB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FB)/fuzz-%: $(FB)/fuzz-%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(PKG_LIBS)

fuzz-build: $(FUZZ_BIN)

# Not intermediate: keep the objects for the next build.
.SECONDARY: $(FUZZ_LIB_OBJ) $(FUZZ_BIN:%=%.o)

# Seeds come from the test suite's real inputs (the example and test configurations, a
# real daemon's journals, the fake API's answers, its tokens): regenerated, not stored.
$(FB)/seeds/.done: tests/fuzz/make-seeds tests/fake-api/fake-api tests/unit/test-config.c \
                   etc/dtrotated.conf dtrotated | $(FB)
	rm -rf $(FB)/seeds
	tests/fuzz/make-seeds $(FB)/seeds
	@touch $@

fuzz-seeds: $(FB)/seeds/.done

fuzz: fuzz-build fuzz-seeds
	tests/fuzz/run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-regress: fuzz-build fuzz-seeds
	tests/fuzz/run --regress $(FUZZ_ALL)

fuzz-clean:
	rm -rf $(FB)

-include $(wildcard $(FB)/*.d)
