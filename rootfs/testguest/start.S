/* Entry point, reached in 64-bit mode exactly as a Linux kernel is: paging on with the
 * VMM's identity map, interrupts off, RSI = the zero page (struct boot_params). */
    .section .text.entry, "ax"
    .global _start
    .code64
_start:
    cli
    lea     stack_top(%rip), %rsp   /* our own stack: the boot stack is only a few KiB */
    mov     %rsi, %rdi              /* guest_main(zero_page) */
    call    guest_main
1:  hlt
    jmp     1b

    .section .bss
    .balign 16
    .space  16384
stack_top:

    .section .note.GNU-stack, "", @progbits
