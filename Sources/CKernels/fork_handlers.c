/*
 * Registers Autograd's fork() handlers when the library is loaded (Swift has no load-time
 * initialisers). The handlers live in AutogradC (ForkSafety.swift); the reference is weak so
 * that programs linking the engine without the C ABI (Swift users, the XCTest bundle without
 * AutogradC) still link, and then simply register nothing.
 */
extern void autograd_register_fork_handlers(void) __attribute__((weak));

__attribute__((constructor)) static void autograd_fork_handlers_at_load(void) {
    if (autograd_register_fork_handlers) autograd_register_fork_handlers();
}
