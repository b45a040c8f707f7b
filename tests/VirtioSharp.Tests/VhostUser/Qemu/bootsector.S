# The boot sector QemuSeaBiosTests puts in sector 0 of its disk (assembled bytes are in the test).
# SeaBIOS loads it through its virtio-blk driver from our vhost-user back-end; it then reads
# sector 1 (a NUL-terminated message) through BIOS int 13h, prints it on COM1, writes its own
# 512 bytes to sector 2, and prints VBLK-WRITE-OK (or VBLK-FAIL).
#   as --32 -o bootsector.o bootsector.S
#   ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o bootsector.bin bootsector.o
    .code16
    .global _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov %dl, drive          # the BIOS drive number (this byte differs in the copy written to sector 2)
    mov $0x0201, %ax        # read 1 sector
    mov $0x8000, %bx        # to 0000:8000
    mov $0x0002, %cx        # cylinder 0, sector 2 (= LBA 1)
    xor %dh, %dh
    mov drive, %dl
    int $0x13
    jc fail
    mov $0x8000, %si
    call puts
    mov $0x0301, %ax        # write 1 sector
    mov $0x7c00, %bx        # from this boot sector
    mov $0x0003, %cx        # cylinder 0, sector 3 (= LBA 2)
    xor %dh, %dh
    mov drive, %dl
    int $0x13
    jc fail
    mov $done_msg, %si
    call puts
    jmp halt
fail:
    mov $fail_msg, %si
    call puts
halt:
    cli
    hlt
    jmp halt
puts:
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret
drive: .byte 0
done_msg: .asciz "VBLK-WRITE-OK\r\n"
fail_msg: .asciz "VBLK-FAIL\r\n"
    .org 510
    .byte 0x55, 0xaa
