namespace VirtioSharp.Native;

/// <summary>Anonymous shared memory files (memfd_create), the usual backing of guest RAM shared over vhost-user.</summary>
public static class MemFd
{
    /// <summary>
    /// Creates a close-on-exec memfd of <paramref name="size"/> bytes (zero-filled). With
    /// <paramref name="sealSize"/> its size is sealed (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL), as
    /// QEMU's memory-backend-memfd does: a process that maps it can then never be made to fault
    /// past its end by someone truncating it.
    /// </summary>
    public static SafeFdHandle Create(string name, ulong size, bool sealSize = false)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, (ulong)long.MaxValue);
        var flags = Interop.MFD_CLOEXEC | (sealSize ? Interop.MFD_ALLOW_SEALING : 0);
        var fd = SafeFdHandle.FromResult(Interop.MemfdCreate(name, flags), "memfd_create");
        try
        {
            if (Interop.FTruncate(fd, (long)size) != 0)
                throw NativeCallException.FromLastError("ftruncate");
            if (sealSize && Interop.Fcntl(fd, Interop.F_ADD_SEALS, Interop.F_SEAL_SHRINK | Interop.F_SEAL_GROW | Interop.F_SEAL_SEAL) != 0)
                throw NativeCallException.FromLastError("fcntl(F_ADD_SEALS)");
            return fd;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// True when the file behind <paramref name="fd"/> cannot shrink (F_SEAL_SHRINK). Files that
    /// do not support seals, or that fail to answer, count as not sealed.
    /// </summary>
    public static bool IsSizeSealed(SafeFdHandle fd)
    {
        var seals = Interop.Fcntl(fd, Interop.F_GET_SEALS);
        return seals >= 0 && (seals & Interop.F_SEAL_SHRINK) != 0;
    }
}
