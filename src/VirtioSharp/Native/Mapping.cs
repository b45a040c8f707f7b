using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>
/// A shared, writable mmap of a file descriptor. The kernel needs a page-aligned file offset,
/// so the mapping starts at the page below <c>offset</c>; <see cref="Address"/> points at
/// <c>offset</c> itself. Disposing unmaps it; the caller makes sure nobody still reads it.
/// </summary>
public sealed class Mapping : SafeHandle
{
    private nuint _mappedLength;

    private Mapping() : base(0, ownsHandle: true) { }

    public override bool IsInvalid => handle == 0;

    /// <summary>Host address of the first requested byte.</summary>
    public nint Address { get; private set; }
    public ulong Length { get; private set; }

    public static Mapping Map(SafeFdHandle fd, ulong offset, ulong length, bool writable = true)
    {
        var page = (ulong)Environment.SystemPageSize;
        var alignedOffset = offset & ~(page - 1);
        var delta = offset - alignedOffset;
        if (length == 0 || length > long.MaxValue - delta || alignedOffset > long.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(length), $"cannot map {length} bytes at offset {offset}");
        var mapLength = (nuint)(length + delta);
        var protection = Interop.PROT_READ | (writable ? Interop.PROT_WRITE : 0);
        var mapping = new Mapping();
        var address = Interop.MMap(0, mapLength, protection, Interop.MAP_SHARED, fd, (long)alignedOffset);
        if (address == Interop.MAP_FAILED)
        {
            mapping.SetHandleAsInvalid();
            throw NativeCallException.FromLastError("mmap");
        }
        mapping.SetHandle(address);
        mapping._mappedLength = mapLength;
        mapping.Address = address + (nint)delta;
        mapping.Length = length;
        return mapping;
    }

    /// <summary>The mapping as a span (for mappings under 2 GiB, e.g. in tests).</summary>
    public unsafe Span<byte> AsSpan() => new((void*)Address, checked((int)Length));

    protected override bool ReleaseHandle() => Interop.MUnmap(handle, _mappedLength) == 0;
}
