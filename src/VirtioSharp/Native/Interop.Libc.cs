namespace VirtioSharp.Native;

/// <summary>
/// Linux system calls the project needs, one small file per call (LibraryImport,
/// SetLastError). Errors become <see cref="Errno"/> values or typed exceptions at this edge.
/// </summary>
internal static partial class Interop
{
    internal const string Libc = "libc";
}

/// <summary>errno values the callers look at.</summary>
public static class Errno
{
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EBUSY = 16;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int EPIPE = 32;
    public const int EOPNOTSUPP = 95;
    public const int ECONNRESET = 104;

    public static string Describe(int errno) => $"{Marshal_GetPInvokeErrorMessage(errno)} (errno {errno})";

    private static string Marshal_GetPInvokeErrorMessage(int errno) =>
        System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno);
}
