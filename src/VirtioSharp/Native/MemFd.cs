namespace VirtioSharp.Native;

/// <summary>Anonymous shared memory files (memfd_create), the usual backing of guest RAM shared over vhost-user.</summary>
public static class MemFd
{
    /// <summary>Creates a close-on-exec memfd of <paramref name="size"/> bytes (zero-filled).</summary>
    public static SafeFdHandle Create(string name, ulong size)
    {
        var fd = SafeFdHandle.FromResult(Interop.MemfdCreate(name, Interop.MFD_CLOEXEC), "memfd_create");
        if (size > long.MaxValue || Interop.FTruncate(fd, (long)size) != 0)
        {
            var error = NativeCallException.FromLastError("ftruncate");
            fd.Dispose();
            throw error;
        }
        return fd;
    }
}
