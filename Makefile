# Shortcuts over scripts/ (each target says which script does the work).
#   make                   build .build/release/libautograd.so        (scripts/build.sh)
#   make install           install the library, autograd.h, autograd.hpp and autograd.pc (scripts/install.sh)
#                          PREFIX=/usr/local by default; DESTDIR=DIR stages for packagers
#   make uninstall         remove what make install put in PREFIX
#   make example           build and run the digits example            (scripts/example.sh)
#   make test              every test, as CI runs it                    (scripts/test.sh)
#   make python            install the Python package bindings/python   (pip)
PREFIX ?= /usr/local
DESTDIR ?=
PYTHON ?= python3

.PHONY: all build install uninstall example test python

all: build

build:
	bash scripts/build.sh

install:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" bash scripts/install.sh

uninstall:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" bash scripts/install.sh --uninstall

example:
	bash scripts/example.sh

test:
	bash scripts/test.sh

python:
	$(PYTHON) -m pip install ./bindings/python
