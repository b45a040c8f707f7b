using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>A memory mapping we own; unmapped exactly once.</summary>
internal sealed class SafeMappingHandle : SafeHandle
{
    private SafeMappingHandle(nint address, nuint length) : base(Interop.MAP_FAILED, ownsHandle: true)
    {
        SetHandle(address);
        Length = length;
    }

    public override bool IsInvalid => handle == Interop.MAP_FAILED || handle == 0;

    public nint Address => handle;
    public nuint Length { get; }

    /// <summary>Maps <paramref name="length"/> bytes of <paramref name="fd"/> shared, readable and writable.</summary>
    public static SafeMappingHandle MapShared(SafeFdHandle fd, ulong length, long offset = 0)
    {
        var address = Interop.MMap(0, (nuint)length, Interop.PROT_READ | Interop.PROT_WRITE, Interop.MAP_SHARED | Interop.MAP_NORESERVE, fd, offset);
        if (address == Interop.MAP_FAILED)
            throw new IOException($"mmap of {length} bytes failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
        return new SafeMappingHandle(address, (nuint)length);
    }

    protected override bool ReleaseHandle() => Interop.MUnmap(handle, Length) == 0;
}
