/*
 * Context switch for AArch64, AAPCS64, ELF targets (Linux, the BSDs).
 *
 * A suspended context is one pointer: its stack pointer.  The registers
 * the procedure call standard asks a callee to preserve sit on that
 * context's own stack, stored by usock__ctx_switch in a 176-byte frame
 * (a multiple of 16, so sp stays aligned):
 *
 *     ctx->sp + 160  fpcr (8 bytes, + 8 bytes of padding)
 *     ctx->sp + 96   d8 .. d15     (low 64 bits of v8-v15)
 *     ctx->sp + 80   x29 (fp), x30 (lr: where the switch returns to)
 *     ctx->sp + 0    x19 .. x28
 *
 * The caller-saved registers need no saving: the compiler already assumes
 * a call clobbers them.  FPCR (rounding mode, flush-to-zero) is kept per
 * context; FPSR (the sticky exception flags) is not, as in boost.context.
 *
 * usock__ctx_make builds the same frame by hand at the top of a fresh
 * stack, with the trampoline in x30, the entry point in x19 and its
 * argument in x20, so the first switch to it "returns" into the
 * trampoline.  Every address is PC-relative, so the object is fine in a
 * shared library.  `hint #34` is BTI C, a NOP on cores without BTI.
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
    .type   usock__ctx_switch, %function
    .p2align 4
usock__ctx_switch:
    hint    #34
    sub     sp, sp, #176
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8, d9, [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mrs     x9, fpcr
    str     x9, [sp, #160]

    mov     x9, sp
    str     x9, [x0]
    ldr     x9, [x1]
    mov     sp, x9

    ldr     x9, [sp, #160]
    msr     fpcr, x9
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8, d9, [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #176
    ret
    .size   usock__ctx_switch, .-usock__ctx_switch

/*
 * void usock__ctx_make(struct usock__ctx *c, void *stack_lo, size_t size,
 *                      void (*entry)(void *), void *arg)
 *
 * Prepares `c` so that the first switch to it calls entry(arg) on the stack
 * [stack_lo, stack_lo + size).  The frame goes at the top of the stack,
 * rounded down to 16 bytes; FPCR is copied from the caller and every other
 * saved register starts at zero.
 *
 *   x0 = c, x1 = stack_lo, x2 = size, x3 = entry, x4 = arg
 */
    .globl  usock__ctx_make
    .hidden usock__ctx_make
    .type   usock__ctx_make, %function
    .p2align 4
usock__ctx_make:
    hint    #34
    add     x9, x1, x2
    and     x9, x9, #~15            /* top: 16-byte aligned */
    sub     x9, x9, #176
    stp     x3, x4, [x9, #0]        /* x19 = entry, x20 = arg */
    stp     xzr, xzr, [x9, #16]
    stp     xzr, xzr, [x9, #32]
    stp     xzr, xzr, [x9, #48]
    stp     xzr, xzr, [x9, #64]
    adr     x10, trampoline
    stp     xzr, x10, [x9, #80]     /* x29 = 0 ends frame walks, x30 */
    stp     xzr, xzr, [x9, #96]
    stp     xzr, xzr, [x9, #112]
    stp     xzr, xzr, [x9, #128]
    stp     xzr, xzr, [x9, #144]
    mrs     x10, fpcr
    stp     x10, xzr, [x9, #160]
    str     x9, [x0]
    ret
    .size   usock__ctx_make, .-usock__ctx_make

/*
 * The first instruction a new context runs, with sp at the 16-byte aligned
 * top of its stack.  The entry point must never return; if it does, that
 * is an internal invariant violation and the context traps on `brk`
 * forever instead of running off its stack.  The CFI marks the end of the
 * call chain for debuggers and unwinders.
 */
    .type   trampoline, %function
    .p2align 4
trampoline:
    .cfi_startproc
    .cfi_undefined x30
    hint    #34
    mov     x0, x20
    blr     x19
1:
    brk     #0x1
    b       1b
    .cfi_endproc
    .size   trampoline, .-trampoline

    .section .note.GNU-stack,"",%progbits
