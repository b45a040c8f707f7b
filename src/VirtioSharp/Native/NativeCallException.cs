using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>A system call failed: which call, and errno with its text.</summary>
public sealed class NativeCallException : IOException
{
    public NativeCallException(string call, int errno)
        : base($"{call} failed: {Native.Errno.Describe(errno)}")
    {
        Call = call;
        Errno = errno;
    }

    public string Call { get; }
    public int Errno { get; }

    internal static NativeCallException FromLastError(string call) => new(call, Marshal.GetLastPInvokeError());
}
