using System.Runtime.InteropServices;

namespace VirtioSharp.Memory;

/// <summary>
/// Guest RAM for the in-process machine: page-aligned native memory, zeroed, exposed as one
/// <see cref="GuestRegion"/> at a chosen guest-physical base.
/// </summary>
public sealed unsafe class GuestRam : IDisposable
{
    public const int PageSize = 4096;
    private void* _base;

    public GuestRam(ulong guestPhysicalBase, ulong size)
    {
        if (size == 0 || size % PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(size), "guest RAM size must be a non-zero multiple of 4096");
        _base = NativeMemory.AlignedAlloc((nuint)size, PageSize);
        NativeMemory.Clear(_base, (nuint)size);
        Base = guestPhysicalBase;
        Size = size;
        Memory = new GuestMemory(new GuestRegion(guestPhysicalBase, size, (nint)_base));
    }

    public ulong Base { get; }
    public ulong Size { get; }
    public GuestMemory Memory { get; }

    public void Dispose()
    {
        if (_base != null)
        {
            NativeMemory.AlignedFree(_base);
            _base = null;
        }
    }
}
