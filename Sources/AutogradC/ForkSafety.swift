#if canImport(Glibc)
import Glibc
#endif
import AutogradEngine

// fork() while other threads are inside the library (see Autograd's ForkSafety for the locks and
// their order). The handlers are registered once, when the library is loaded: the constructor in
// Sources/CKernels/fork_handlers.c calls autograd_register_fork_handlers (a local symbol, not part
// of the C API). The handle table's spin lock is taken last, after every lock of the engine.

@_cdecl("autograd_register_fork_handlers")
public func autograd_register_fork_handlers() {
    pthread_atfork(
        {
            ForkSafety.prepare()
            HandleTable.shared.lockForFork()
        },
        {
            HandleTable.shared.unlockAfterFork()
            ForkSafety.parent()
        },
        {
            HandleTable.shared.unlockAfterFork()
            ForkSafety.childReset()
        })
}
