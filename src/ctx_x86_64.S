/*
 * Context switch for x86-64, System V ABI (Linux, the BSDs).
 *
 * A suspended context is one pointer: its stack pointer.  Everything else
 * the ABI asks a callee to preserve sits on that context's own stack,
 * pushed by usock__ctx_switch:
 *
 *     higher addresses
 *     | return address  |  <- where usock__ctx_switch returns to
 *     | rbp             |
 *     | rbx             |
 *     | r12             |
 *     | r13             |
 *     | r14             |
 *     | r15             |
 *     | fpucw | mxcsr   |  <- ctx->sp (x87 control word at +4, MXCSR at +0)
 *     lower addresses
 *
 * The caller-saved registers need no saving: the compiler already assumes
 * a call clobbers them.  The MXCSR control bits and the x87 control word
 * (rounding modes, exception masks) are callee-saved too, so each context
 * keeps its own, as boost.context does.
 *
 * usock__ctx_make builds the same frame by hand at the top of a fresh
 * stack, with the trampoline as return address, the entry point in r12 and
 * its argument in r13, so the first switch to it "returns" into the
 * trampoline.  Nothing here refers to an absolute address, so the object is
 * fine in a shared library.
 *
 * endbr64 marks the entry points for CET indirect-branch tracking (it is a
 * NOP on older CPUs).  The file deliberately carries no GNU property note:
 * switching stacks with a plain `ret` is not shadow-stack compatible, so the
 * linked library must not claim SHSTK support.
 */

    .text

/*
 * void usock__ctx_switch(struct usock__ctx *from, struct usock__ctx *to)
 *
 * Saves the callee-saved state of the caller on its stack, stores the stack
 * pointer in from->sp, loads to->sp and restores the state found there.
 * Returns when some other context switches back to `from`.
 */
    .globl  usock__ctx_switch
    .hidden usock__ctx_switch
    .type   usock__ctx_switch, @function
    .p2align 4
usock__ctx_switch:
    endbr64
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $8, %rsp
    stmxcsr (%rsp)
    fnstcw  4(%rsp)

    movq    %rsp, (%rdi)
    movq    (%rsi), %rsp

    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .size   usock__ctx_switch, .-usock__ctx_switch

/*
 * void usock__ctx_make(struct usock__ctx *c, void *stack_lo, size_t size,
 *                      void (*entry)(void *), void *arg)
 *
 * Prepares `c` so that the first switch to it calls entry(arg) on the stack
 * [stack_lo, stack_lo + size).  The frame goes at the top of the stack,
 * rounded down to 16 bytes; the floating-point control state is copied
 * from the caller.
 *
 *   rdi = c, rsi = stack_lo, rdx = size, rcx = entry, r8 = arg
 */
    .globl  usock__ctx_make
    .hidden usock__ctx_make
    .type   usock__ctx_make, @function
    .p2align 4
usock__ctx_make:
    endbr64
    leaq    (%rsi,%rdx), %rax
    andq    $-16, %rax              /* top: 16-byte aligned */
    leaq    trampoline(%rip), %r9
    movq    %r9, -8(%rax)           /* return address */
    movq    $0, -16(%rax)           /* rbp: ends frame-pointer walks */
    movq    $0, -24(%rax)           /* rbx */
    movq    %rcx, -32(%rax)         /* r12 = entry */
    movq    %r8, -40(%rax)          /* r13 = arg */
    movq    $0, -48(%rax)           /* r14 */
    movq    $0, -56(%rax)           /* r15 */
    stmxcsr -64(%rax)
    fnstcw  -60(%rax)
    subq    $64, %rax
    movq    %rax, (%rdi)
    ret
    .size   usock__ctx_make, .-usock__ctx_make

/*
 * The first instruction a new context runs.  The switch's `ret` left rsp
 * at the 16-byte aligned top, so after `call` pushes its return address
 * the entry point sees rsp = 8 (mod 16), as the ABI requires.  The entry
 * point must never return; if it does, that is an internal invariant
 * violation and the context traps on ud2 (SIGILL) forever instead of
 * running off the top of its stack.  The CFI marks the end of the call
 * chain for debuggers and unwinders.
 */
    .type   trampoline, @function
    .p2align 4
trampoline:
    .cfi_startproc
    .cfi_undefined rip
    endbr64
    movq    %r13, %rdi
    callq   *%r12
1:
    ud2
    jmp     1b
    .cfi_endproc
    .size   trampoline, .-trampoline

    .section .note.GNU-stack,"",@progbits
