# libsockmsg - plain Makefile.  `make help` lists the targets.

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR   ?= $(LIBDIR)/cmake/sockmsg
MANDIR     ?= $(PREFIX)/share/man

CC      ?= cc
# SANITIZE=address,undefined (or thread) builds everything instrumented,
# in a build directory of its own so plain and sanitized objects never mix.
SANITIZE ?=
ifeq ($(SANITIZE),)
BUILD   ?= build
else
BUILD   ?= build/sanitize-$(subst $(comma),-,$(SANITIZE))
SANFLAGS = -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
comma := ,

# The version lives in include/sockmsg/sockmsg.h only.
HEADER  := include/sockmsg/sockmsg.h
version_part = $(shell sed -n 's/^\#define SM_VERSION_$(1) \([0-9]*\)/\1/p' $(HEADER))
MAJOR   := $(call version_part,MAJOR)
VERSION := $(MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)

WARN    := -Wall -Wextra -Wpedantic -Werror
CFLAGS  ?= -O2 -g
ALL_CFLAGS  = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SANFLAGS) -Iinclude -MMD -MP
# TLS through OpenSSL 3 when pkg-config finds it; `make TLS=0` builds
# without (the TLS calls then fail with SM_ENOTLS).
TLS ?= $(shell pkg-config --exists openssl 2>/dev/null && echo 1 || echo 0)
ifeq ($(TLS),1)
TLS_CFLAGS  := -DSM_HAVE_TLS $(shell pkg-config --cflags openssl)
TLS_LIBS    := $(shell pkg-config --libs openssl)
PC_REQUIRES := openssl
endif
LIB_CFLAGS  = $(ALL_CFLAGS) $(TLS_CFLAGS) -fPIC -fvisibility=hidden -DSM_BUILDING_LIBRARY
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS) -pthread $(TLS_LIBS)

LIB_SRC  := $(wildcard lib/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
STATIC   := $(BUILD)/libsockmsg.a
SONAME   := libsockmsg.so.$(MAJOR)
SHARED   := $(BUILD)/libsockmsg.so.$(VERSION)
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
# The tests' shared support code (tests/support) links into every test
# binary, the ThreadSanitizer runner's too.
SUPPORT_SRC := $(wildcard tests/support/*.c)
TEST_SRC := $(wildcard tests/test_*.c) $(SUPPORT_SRC)
TEST_LIBS := -lcriterion
# Criterion's runner cannot start under ThreadSanitizer (its issue #274):
# the threaded tests build against the stand-in in tests/tsan instead.
ifeq ($(SANITIZE),thread)
TEST_SRC := $(shell grep -lE 'Test.threads,' tests/test_*.c) $(SUPPORT_SRC) tests/tsan/runner.c
TEST_CFLAGS := -Itests/tsan
TEST_LIBS :=
endif
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
UNIT     := $(BUILD)/tests/unit

.PHONY: all lib examples tools bench fuzz lint format format-check check check-valgrind unit-tests install-test script-tests install uninstall demo deps clean help

all: lib examples tools

lib: $(STATIC) $(SHARED) $(BUILD)/libsockmsg.so

$(BUILD)/lib/%.o: lib/%.c
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(ALL_LDFLAGS) $^ $(TLS_LIBS) -o $@

$(BUILD)/libsockmsg.so: $(SHARED)
	ln -sf $(notdir $(SHARED)) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

examples: $(EXAMPLES)

# Command-line tools: each folder tools/<name>/ is one program, its .c
# files (and private headers) built into $(BUILD)/<name> (smcat).
TOOL_NAMES := $(patsubst tools/%/,%,$(sort $(dir $(wildcard tools/*/*.c))))
TOOLS      := $(TOOL_NAMES:%=$(BUILD)/%)
TOOL_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/*/*.c))
tools: $(TOOLS)

$(BUILD)/tools/%.o: tools/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# $(BUILD)/<name>: the objects of tools/<name>/ with the static library.
define TOOL_LINK
$(BUILD)/$(1): $(filter $(BUILD)/tools/$(1)/%,$(TOOL_OBJ)) $(STATIC)
	$$(CC) $$(filter %.o,$$^) $(STATIC) $$(ALL_LDFLAGS) -o $$@
endef
$(foreach t,$(TOOL_NAMES),$(eval $(call TOOL_LINK,$(t))))
-include $(TOOL_OBJ:.o=.d)

# Man pages, docs/man/<name>.<section>.
MAN_PAGES := $(wildcard docs/man/*.[137])

# login-server hashes passwords with the system's libcrypt.
$(BUILD)/examples/login-server: EXTRA_LIBS = -lcrypt

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< $(STATIC) $(ALL_LDFLAGS) $(EXTRA_LIBS) -o $@

# One program per transport, bench/transport-<name>.c, each linked with the
# shared workloads in bench/bench.c.  ZeroMQ and nng are baselines only:
# built when installed (make deps), reported as "not installed" when not.
HAVE_ZMQ := $(shell pkg-config --exists libzmq 2>/dev/null && echo yes)
HAVE_NNG := $(shell echo '\#include <nng/nng.h>' | $(CC) -E -x c - >/dev/null 2>&1 && echo yes)
# The TLS transports (sockmsg-tls, raw-tls: OpenSSL by hand) are built
# when the library is built with OpenSSL (TLS=1, found by pkg-config).
BENCH_TLS := $(if $(filter 1,$(TLS)),sockmsg-tls raw-tls)
BENCH_TRANSPORTS := sockmsg raw-naive raw-buffered raw-buffered-64k $(if $(HAVE_ZMQ),zmq) $(if $(HAVE_NNG),nng) $(BENCH_TLS)
# Inside someone else's event loop: sockmsg-nb is the non-blocking API in
# a poll() loop (lat, thr); sockmsg-uv is sm_server served from a libuv
# loop by include/sockmsg/adapters/libuv.h (server), built when libuv is.
HAVE_UV := $(shell pkg-config --exists libuv 2>/dev/null && echo yes)
BENCH_TRANSPORTS += sockmsg-nb $(if $(HAVE_UV),sockmsg-uv)
$(BUILD)/bench/bench-sockmsg-uv: include/sockmsg/adapters/libuv.h
$(BUILD)/bench/bench-sockmsg-uv: EXTRA_CFLAGS = $(shell pkg-config --cflags libuv)
$(BUILD)/bench/bench-sockmsg-uv: EXTRA_LIBS = $(shell pkg-config --libs libuv)
BENCH_RUN := $(or $(BENCH_ONLY),$(BENCH_TRANSPORTS))
BENCH_BIN := $(BENCH_RUN:%=$(BUILD)/bench/bench-%)
BENCH_COMMON := bench/bench.c bench/rawsock.c

$(BUILD)/bench/bench-zmq: EXTRA_LIBS = $(shell pkg-config --libs libzmq 2>/dev/null)
$(BUILD)/bench/bench-nng: EXTRA_LIBS = -lnng
# raw-buffered-64k is raw-buffered.c built with the earlier receive sizes.
$(BUILD)/bench/bench-raw-buffered-64k: bench/transport-raw-buffered.c
# sockmsg-tls sees the library's SSL_new and SSL_CTX_ctrl through --wrap
# (what a session negotiated; SSL_MODE_RELEASE_BUFFERS off on request).
$(BUILD)/bench/bench-sockmsg-tls $(BUILD)/bench/bench-raw-tls: bench/tlssock.c bench/tlssock.h
$(BUILD)/bench/bench-sockmsg-tls $(BUILD)/bench/bench-raw-tls: EXTRA_SRC = bench/tlssock.c
$(BUILD)/bench/bench-sockmsg-tls $(BUILD)/bench/bench-raw-tls: EXTRA_CFLAGS = $(shell pkg-config --cflags openssl)
$(BUILD)/bench/bench-raw-tls: EXTRA_LIBS = $(shell pkg-config --libs openssl)
$(BUILD)/bench/bench-sockmsg-tls: EXTRA_LIBS = $(shell pkg-config --libs openssl) \
    -Wl,--wrap=SSL_new,--wrap=SSL_CTX_ctrl

$(BUILD)/bench/bench-%: bench/transport-%.c $(BENCH_COMMON) bench/bench.h bench/rawsock.h $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(EXTRA_CFLAGS) $< $(BENCH_COMMON) $(EXTRA_SRC) $(STATIC) $(ALL_LDFLAGS) $(EXTRA_LIBS) -o $@

# Benchmarks report figures as ratios within one run; they never assert
# timings.  QUICK=1 is a smoke run; BENCH_ONLY=sockmsg limits transports.
bench: lib $(BENCH_BIN)
	python3 bench/run.py --build $(BUILD) --transports "$(BENCH_RUN)" \
	    --available "$(BENCH_TRANSPORTS)" \
	    $(if $(QUICK),--quick) --out bench/results --chart docs/bench-ratios.png

# Fuzzing: libFuzzer targets tests/fuzz/fuzz_*.c, built by clang with the
# library's sources.  `make fuzz FUZZ_SECONDS=N` runs each for N seconds,
# starting from the committed seeds in tests/fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(wildcard tests/fuzz/fuzz_*.c))
# fuzz_tls drives OpenSSL itself: left out of builds without it (TLS=0).
ifneq ($(TLS),1)
FUZZ_TARGETS := $(filter-out $(FUZZ_DIR)/fuzz_tls,$(FUZZ_TARGETS))
endif
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE $(WARN) -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude -Ilib

$(FUZZ_DIR)/%: tests/fuzz/%.c $(LIB_SRC) $(wildcard lib/*.h) $(HEADER)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) $(TLS_CFLAGS) $< $(LIB_SRC) -pthread $(TLS_LIBS) -o $@

fuzz: $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	    name=$$(basename $$t); mkdir -p $(FUZZ_DIR)/corpus-$$name; \
	    echo "== $$name for $(FUZZ_SECONDS) s"; \
	    $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/$$name- \
	        $(FUZZ_DIR)/corpus-$$name tests/fuzz/corpus/$$name 2>$(FUZZ_DIR)/$$name.log \
	        || { tail -n 40 $(FUZZ_DIR)/$$name.log; exit 1; }; \
	    grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units|cov:' $(FUZZ_DIR)/$$name.log | tail -n 2; \
	    echo "corpus: $$(ls $(FUZZ_DIR)/corpus-$$name | wc -l) new inputs"; \
	done

# Style and static analysis.  Every C file follows .clang-format; the
# library, tools and examples pass cppcheck, clang-tidy (.clang-tidy) and
# gcc -fanalyzer with no findings.
FORMAT_FILES := $(wildcard lib/*.[ch] include/sockmsg/*.h tools/*/*.[ch] examples/*.c bench/*.[ch] \
                  tests/*.c tests/support/*.[ch] tests/fuzz/*.c tests/tsan/*.c tests/tsan/criterion/*.h)
LINT_FILES   := $(LIB_SRC) $(wildcard tools/*/*.c examples/*.c)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

format:
	clang-format -i $(FORMAT_FILES)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	    --std=c11 --inline-suppr -D_GNU_SOURCE -Iinclude -Ilib $(LINT_FILES)
	clang-tidy --quiet $(LINT_FILES) -- -std=c11 -D_GNU_SOURCE -Iinclude -Ilib $(TLS_CFLAGS)
	for f in $(LINT_FILES); do \
	    gcc -std=c11 -D_GNU_SOURCE -Iinclude -Ilib -fanalyzer -Werror -Wall -Wextra \
	        -fsyntax-only $$f || exit 1; \
	done

# Event-loop adapters: include/sockmsg/adapters/ holds header-only glue
# for libuv and libevent (installed with the other headers; the library
# itself never links either).  Their examples, uv-echo-server and
# event-echo-server, link the loop's library.  Whether it is installed is
# asked when the recipe runs, not when make reads this file, so that
# `make deps check` builds them right after deps installed it; without it
# the program is left out with a note, and tests/test_adapters.c skips its
# tests (fails them under SM_REQUIRE_TOOLS, as in CI).  The test file
# also drives the adapters in-process, compiled in the same way.
ADAPTER_HEADERS  := $(wildcard include/sockmsg/adapters/*.h)
ADAPTER_EXAMPLES := $(BUILD)/examples/uv-echo-server $(BUILD)/examples/event-echo-server
$(BUILD)/examples/uv-echo-server: ADAPTER_PKG = libuv
$(BUILD)/examples/event-echo-server: ADAPTER_PKG = libevent_core

$(ADAPTER_EXAMPLES): $(BUILD)/examples/%: examples/%.c $(ADAPTER_HEADERS) $(STATIC)
	@mkdir -p $(@D)
	@if pkg-config --exists $(ADAPTER_PKG); then \
	    cmd="$(CC) $(ALL_CFLAGS) $$(pkg-config --cflags $(ADAPTER_PKG)) $< $(STATIC) \
	         $(ALL_LDFLAGS) $$(pkg-config --libs $(ADAPTER_PKG)) -o $@"; echo $$cmd; $$cmd; \
	else echo "$@ not built: $(ADAPTER_PKG) is not installed (make deps installs it)"; fi

adapter_pkgs = $(shell for p in libuv libevent_core; do pkg-config --exists $$p && echo $$p; done)
$(BUILD)/tests/test_adapters.o: TEST_CFLAGS += $(if $(filter libuv,$(adapter_pkgs)),-DSM_TEST_LIBUV) \
                                 $(if $(filter libevent_core,$(adapter_pkgs)),-DSM_TEST_LIBEVENT)
$(UNIT): TEST_LIBS += $(if $(adapter_pkgs),$(shell pkg-config --libs $(adapter_pkgs)))

# The adapter headers are checked for style; the examples, which include
# them, are linted where the libraries' headers are there to be read.
FORMAT_FILES += $(ADAPTER_HEADERS)
LINT_FILES   := $(filter-out $(if $(shell pkg-config --exists libuv && echo y),,examples/uv-echo-server.c) \
                  $(if $(shell pkg-config --exists libevent_core && echo y),,examples/event-echo-server.c), \
                  $(LINT_FILES))

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(ALL_CFLAGS) -Ilib -DBUILD_DIR='"$(BUILD)"' -c $< -o $@

$(UNIT): $(TEST_OBJ) $(STATIC)
	$(CC) $(TEST_OBJ) $(STATIC) $(ALL_LDFLAGS) $(TEST_LIBS) -o $@

# The Criterion run comes last so its summary is the closing line.
# CHECK_FILTER='threads/*' runs a subset (used for ThreadSanitizer).
# In `make deps check`, make looked for OpenSSL, the AVR toolchain and the
# rest when it read this file, before deps installed them: so check runs
# in a fresh make once deps is done.
ifneq ($(filter deps,$(MAKECMDGOALS)),)
check: deps
	$(MAKE) check
else
check: all $(UNIT) $(if $(SANITIZE)$(CHECK_FILTER),,install-test script-tests)
	TSAN_OPTIONS=halt_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp $(UNIT) -j2 $(if $(CHECK_FILTER),--filter='$(CHECK_FILTER)')
endif

# The examples' end-to-end tests with every example under valgrind memcheck.
check-valgrind: all $(UNIT)
	SM_EXAMPLES_VALGRIND=1 $(UNIT) -j2 --filter='examples/*'

install-test: all
	sh tests/install.sh

# Shell-driven tests, each given the build directory: smcat, the man pages,
# the Python peers (tests/*.sh other than install.sh).
SCRIPT_TESTS := $(filter-out tests/install.sh,$(wildcard tests/*.sh))
script-tests: all
	@for t in $(SCRIPT_TESTS); do echo "== $$t"; sh $$t $(BUILD) || exit 1; done

# Microcontrollers.  The codec (include/sockmsg/frame.h) compiled
# freestanding for the ATmega328P (Arduino Uno) and a Cortex-M0+; the
# self-test firmware mcu/selftest.c; the Arduino sketch
# examples/arduino/sockmsg_echo, built over Debian's Arduino AVR core
# (arduino-core-avr) with plain avr-gcc, as the Arduino IDE would; and
# tests/mcu/uart_peer.c, which runs a firmware under libsimavr with a peer
# on its serial port.  tests/mcu.sh runs and measures them.  Each part is
# built where its tools are installed (make deps installs them all).
AVR_CC       ?= avr-gcc
AVR_CXX      ?= avr-g++
ARM_CC       ?= arm-none-eabi-gcc
ARDUINO_AVR  ?= /usr/share/arduino/hardware/arduino/avr
MCU_DIR      := $(BUILD)/mcu
MCU_CFLAGS   := -std=c11 $(WARN) -ffreestanding -Os -Iinclude
AVR_ARCH     := -mmcu=atmega328p -DF_CPU=16000000UL
ARM_ARCH     := -mcpu=cortex-m0plus -mthumb
have_tool     = $(shell command -v $(1) >/dev/null 2>&1 && echo yes)
HAVE_AVR     := $(call have_tool,$(AVR_CC))
HAVE_ARM     := $(call have_tool,$(ARM_CC))
HAVE_ARDUINO := $(and $(HAVE_AVR),$(wildcard $(ARDUINO_AVR)/cores/arduino/Arduino.h))
HAVE_LIBSIMAVR := $(wildcard /usr/include/simavr/sim_avr.h)
MCU_TARGETS  := $(if $(HAVE_AVR),$(MCU_DIR)/codec-avr.elf $(MCU_DIR)/selftest.elf) \
                $(if $(HAVE_ARM),$(MCU_DIR)/codec-arm.elf) \
                $(if $(HAVE_ARDUINO),$(MCU_DIR)/sockmsg_echo.elf) \
                $(if $(HAVE_LIBSIMAVR),$(MCU_DIR)/uart-peer)

.PHONY: mcu
mcu: $(MCU_TARGETS)
script-tests: mcu

# -fstack-usage writes each function's stack frame to codec-*.su.
$(MCU_DIR)/codec-avr.o: mcu/codec.c include/sockmsg/frame.h
	@mkdir -p $(@D)
	$(AVR_CC) $(MCU_CFLAGS) $(AVR_ARCH) -fstack-usage -c $< -o $@

$(MCU_DIR)/codec-arm.o: mcu/codec.c include/sockmsg/frame.h
	@mkdir -p $(@D)
	$(ARM_CC) $(MCU_CFLAGS) $(ARM_ARCH) -fstack-usage -c $< -o $@

# Linked alone, with the compiler's helpers (libgcc) and no C library:
# what the codec adds to a firmware's flash, and proof that it needs no more.
$(MCU_DIR)/codec-avr.elf: $(MCU_DIR)/codec-avr.o
	$(AVR_CC) -mmcu=atmega328p -nostdlib -Wl,-e,sm_mcu_decode $< -lgcc -o $@

$(MCU_DIR)/codec-arm.elf: $(MCU_DIR)/codec-arm.o
	$(ARM_CC) $(ARM_ARCH) -nostdlib -Wl,-e,sm_mcu_decode $< -lgcc -o $@

$(MCU_DIR)/selftest.elf: mcu/selftest.c include/sockmsg/frame.h
	@mkdir -p $(@D)
	$(AVR_CC) $(MCU_CFLAGS) $(AVR_ARCH) $< -o $@

# The core is built as the IDE builds it for an Uno, warnings off (it is
# not our code).  Debian's core uses DECIMAL_DIG, which avr-gcc 5.4's
# <float.h> hides from C++: it gets the compiler's own value.
ARDUINO_CORE  := $(ARDUINO_AVR)/cores/arduino
ARDUINO_FLAGS := -mmcu=atmega328p -DF_CPU=16000000L -DARDUINO=10807 -DARDUINO_AVR_UNO \
                 -DARDUINO_ARCH_AVR -DDECIMAL_DIG=__DECIMAL_DIG__ -I$(ARDUINO_CORE) \
                 -I$(ARDUINO_AVR)/variants/standard -Os -ffunction-sections -fdata-sections
ARDUINO_CXX   := $(AVR_CXX) -std=gnu++11 -fno-exceptions -fno-threadsafe-statics $(ARDUINO_FLAGS)
ARDUINO_OBJ   := $(patsubst $(ARDUINO_CORE)/%,$(MCU_DIR)/arduino-core/%.o, \
                   $(wildcard $(ARDUINO_CORE)/*.c $(ARDUINO_CORE)/*.cpp $(ARDUINO_CORE)/*.S))

$(MCU_DIR)/arduino-core/%.c.o: $(ARDUINO_CORE)/%.c
	@mkdir -p $(@D)
	$(AVR_CC) -std=gnu11 $(ARDUINO_FLAGS) -w -c $< -o $@

$(MCU_DIR)/arduino-core/%.cpp.o: $(ARDUINO_CORE)/%.cpp
	@mkdir -p $(@D)
	$(ARDUINO_CXX) -w -c $< -o $@

$(MCU_DIR)/arduino-core/%.S.o: $(ARDUINO_CORE)/%.S
	@mkdir -p $(@D)
	$(AVR_CC) -x assembler-with-cpp $(ARDUINO_FLAGS) -c $< -o $@

# A .ino is C++ that the IDE compiles with Arduino.h included first; the
# sketch's frame.h is taken from include/sockmsg rather than a copy.
$(MCU_DIR)/sockmsg_echo.o: examples/arduino/sockmsg_echo/sockmsg_echo.ino include/sockmsg/frame.h
	@mkdir -p $(@D)
	$(ARDUINO_CXX) $(WARN) -x c++ -include Arduino.h -Iinclude/sockmsg -c $< -o $@

$(MCU_DIR)/sockmsg_echo.elf: $(MCU_DIR)/sockmsg_echo.o $(ARDUINO_OBJ)
	$(AVR_CC) -mmcu=atmega328p -Os -Wl,--gc-sections $^ -lm -o $@

$(MCU_DIR)/uart-peer: tests/mcu/uart_peer.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -isystem /usr/include/simavr $< $(ALL_LDFLAGS) -lsimavr -o $@

# The C files above, in the style and lint checks (the firmware and the
# sketch need AVR headers, so only the portable codec wrapper is linted).
FORMAT_FILES += $(wildcard mcu/*.c tests/mcu/*.c)
LINT_FILES   += mcu/codec.c

# install builds what it installs (the library and smcat), not the examples.
# The CMake package files (cmake/*.in) locate the headers and libraries
# relative to their own directory, so the tree may be moved or staged.
install: lib tools
	install -d $(DESTDIR)$(INCLUDEDIR)/sockmsg $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(CMAKEDIR)
	install -m 644 $(HEADER) include/sockmsg/frame.h $(DESTDIR)$(INCLUDEDIR)/sockmsg/
	install -d $(DESTDIR)$(INCLUDEDIR)/sockmsg/adapters
	install -m 644 $(ADAPTER_HEADERS) $(DESTDIR)$(INCLUDEDIR)/sockmsg/adapters/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(SHARED)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libsockmsg.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@REQUIRES_PRIVATE@|$(PC_REQUIRES)|' \
	    sockmsg.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/sockmsg.pc
	ptr=$$(echo __SIZEOF_POINTER__ | $(CC) -E -P -x c - | tail -n 1) && \
	sed -e "s|@INCLUDE_REL@|$$(realpath -m --relative-to=$(CMAKEDIR) $(INCLUDEDIR))|" \
	    -e "s|@LIB_REL@|$$(realpath -m --relative-to=$(CMAKEDIR) $(LIBDIR))|" \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@MAJOR@|$(MAJOR)|' -e 's|@REQUIRES_PRIVATE@|$(PC_REQUIRES)|' \
	    -e "s|@SIZEOF_VOID_P@|$$ptr|" -e "s|@BITS@|$$((ptr * 8))|" \
	    cmake/sockmsgConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/sockmsgConfig.cmake && \
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@MAJOR@|$(MAJOR)|' \
	    -e "s|@SIZEOF_VOID_P@|$$ptr|" -e "s|@BITS@|$$((ptr * 8))|" \
	    cmake/sockmsgConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/sockmsgConfigVersion.cmake
	$(if $(TOOLS),install -d $(DESTDIR)$(BINDIR) && install -m 755 $(TOOLS) $(DESTDIR)$(BINDIR)/)
	for sec in 1 3 7; do \
	    pages=$$(ls docs/man/*.$$sec 2>/dev/null) || continue; \
	    install -d $(DESTDIR)$(MANDIR)/man$$sec && install -m 644 $$pages $(DESTDIR)$(MANDIR)/man$$sec/; \
	done
	@# The dynamic linker's cache must learn of a new library on the live
	@# system (Debian does not search /usr/local/lib without it).
	$(if $(DESTDIR),,-ldconfig)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/sockmsg/sockmsg.h $(DESTDIR)$(INCLUDEDIR)/sockmsg/frame.h
	rm -f $(ADAPTER_HEADERS:include/%=$(DESTDIR)$(INCLUDEDIR)/%)
	-rmdir $(DESTDIR)$(INCLUDEDIR)/sockmsg/adapters
	-rmdir $(DESTDIR)$(INCLUDEDIR)/sockmsg
	rm -f $(DESTDIR)$(LIBDIR)/libsockmsg.a $(DESTDIR)$(LIBDIR)/libsockmsg.so \
	      $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(notdir $(SHARED)) \
	      $(DESTDIR)$(PKGCONFIGDIR)/sockmsg.pc
	rm -f $(DESTDIR)$(CMAKEDIR)/sockmsgConfig.cmake $(DESTDIR)$(CMAKEDIR)/sockmsgConfigVersion.cmake
	-rmdir $(DESTDIR)$(CMAKEDIR)
	rm -f $(TOOLS:$(BUILD)/%=$(DESTDIR)$(BINDIR)/%)
	rm -f $(foreach p,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p)))

demo: examples
	sh examples/demo.sh $(BUILD)/examples

# Debian packages the build, the tests and the benchmark baselines need
# (ZeroMQ, nng and gnuplot are for make bench only; debhelper and lintian
# build and check the .deb files, cmake builds the CMake consumers, tshark
# runs the Wireshark dissector, python3-venv takes the pip package); sudo
# only when not root.
DEB_PACKAGES := build-essential clang pkg-config libcriterion-dev libcrypt-dev libssl-dev python3 \
                mandoc man-db valgrind cppcheck clang-tidy clang-format libclang-rt-14-dev \
                libzmq3-dev libnng-dev gnuplot-nox \
                gcc-avr avr-libc simavr libsimavr-dev gcc-arm-none-eabi arduino-core-avr \
                default-jdk-headless nodejs \
                debhelper lintian cmake tshark python3-venv \
                libuv1-dev libevent-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(DEB_PACKAGES)

clean:
	rm -rf build

help:
	@echo "make            build libraries, examples and smcat into $(BUILD)/"
	@echo "make demo       run the tutorial server and client on a free port"
	@echo "make deps       install the Debian packages the tests need"
	@echo "make check      run the tests (SANITIZE=address,undefined or thread)"
	@echo "make bench      compare with raw sockets, ZeroMQ and nng (QUICK=1: smoke run)"
	@echo "make check-valgrind  the examples' end-to-end tests under valgrind"
	@echo "make fuzz       run each libFuzzer target for FUZZ_SECONDS=$(FUZZ_SECONDS) s"
	@echo "make lint       cppcheck, clang-tidy and gcc -fanalyzer"
	@echo "make format-check / make format   check / apply .clang-format"
	@echo "make install    install under PREFIX=$(PREFIX) (DESTDIR honoured): headers, libraries,"
	@echo "                sockmsg.pc, the CMake package (lib/cmake/sockmsg), smcat, man pages"
	@echo "make uninstall  remove what install put there"
	@echo "dpkg-buildpackage -us -uc -b   the Debian packages (debian/); tested by tests/packages/debs.sh"

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
