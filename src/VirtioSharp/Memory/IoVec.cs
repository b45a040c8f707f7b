using System.Runtime.InteropServices;

namespace VirtioSharp.Memory;

/// <summary>One scatter/gather element, laid out as struct iovec so it can go straight to preadv/pwritev.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct IoVec
{
    public nint Base;
    public nuint Length;

    public IoVec(nint @base, nuint length)
    {
        Base = @base;
        Length = length;
    }
}
