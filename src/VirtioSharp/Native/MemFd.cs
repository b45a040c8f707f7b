using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>Anonymous shared memory with a file descriptor (memfd_create(2)), for memory another process maps.</summary>
internal static class MemFd
{
    /// <summary>Creates a memfd of <paramref name="size"/> bytes (sparse until touched).</summary>
    public static SafeFdHandle Create(string name, ulong size)
    {
        var fd = Interop.MemfdCreate(name, Interop.MFD_CLOEXEC);
        if (fd < 0)
            throw new IOException($"memfd_create failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
        var handle = new SafeFdHandle(fd);
        if (Interop.FTruncate(handle, (long)size) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw new IOException($"sizing shared memory to {size} bytes failed: {Errno.Describe(errno)}");
        }
        return handle;
    }
}
