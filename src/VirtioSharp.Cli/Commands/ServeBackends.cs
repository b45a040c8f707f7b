using VirtioSharp.Block;
using VirtioSharp.Block.Nbd;
using VirtioSharp.Diagnostics;
using VirtioSharp.Rbd;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Cli.Commands;

/// <summary><c>vblk serve</c>'s storage: opens the backend IMAGE and the options name, and checks --aio against it.</summary>
internal static class ServeBackends
{
    /// <summary>Checks --aio against the backend and the kernel; the words the start-up line ends with.</summary>
    public static string DescribeAio(ServeSettings s, IBlockBackend backend)
    {
        if (backend is NbdBackend nbd)
        {
            if (s.Aio == AioMode.IoUring)
                throw new UsageException("--aio io_uring is for a file image; an NBD export does no file I/O");
            return $"; up to {Math.Min(BlkDevice.MaxAsyncPerQueue, s.QueueSize)} requests in flight per queue over {nbd.Connections} NBD connection{(nbd.Connections == 1 ? "" : "s")}";
        }
        if (backend is RbdBackend)
        {
            if (s.Aio == AioMode.IoUring)
                throw new UsageException("--aio io_uring is for a file image; an rbd: image does no file I/O");
            var timeout = s.Ceph.IoTimeoutSeconds == 0 ? "no timeout" : $"failed after {s.Ceph.IoTimeoutSeconds} s without an answer";
            return s.Aio == AioMode.Sync
                ? $"; librbd requests one at a time per queue (--aio sync), {timeout}"
                : $"; librbd requests asynchronous, up to {Math.Min(BlkDevice.MaxAsyncPerQueue, s.QueueSize)} in flight per queue, {timeout}";
        }
        if (backend is not FileBackend)
        {
            if (s.Aio == AioMode.IoUring)
                throw new UsageException($"--aio io_uring is for a file image; --backend {s.Backend} does no file I/O");
            return "";
        }
        if (s.Aio == AioMode.Sync)
            return "; file I/O synchronous per queue (--aio sync)";
        // Probed once: a ring, the opcodes the workers queue, and multishot poll (Linux 5.13).
        try
        {
            if (!AioChoice.UseIoUring(s.Aio, true, VirtioSharp.Native.IoUringSupport.Probed, out var why))
                return $"; file I/O synchronous per queue ({why})";
        }
        catch (InvalidOperationException e)
        {
            throw new UsageException(e.Message);
        }
        return $"; reads and flushes through io_uring, up to {Math.Min(BlkDevice.MaxAsyncPerQueue, s.QueueSize)} in flight per queue";
    }

    public static IBlockBackend Open(ServeSettings s, ILogSink log)
    {
        if (s.BlkSize < BlkLayout.SectorSize || s.BlkSize > 65536 || (s.BlkSize & (s.BlkSize - 1)) != 0)
            throw new UsageException($"--blk-size {s.BlkSize} must be a power of two between 512 and 65536");
        if (s.Backend == "file" && s.Image is not null && NbdUri.LooksLikeNbd(s.Image))
        {
            if (s.Size is not null)
                throw new UsageException("--size is for --backend memory or null; an NBD export has its own size");
            if (s.NbdTimeout is not (>= 1 and <= 3600))
                throw new UsageException($"--nbd-timeout {s.NbdTimeout} must be 1..3600 seconds");
            return NbdBackend.Open(NbdUri.Parse(s.Image), new NbdOptions
            {
                Connections = s.NbdConnections,
                Timeout = TimeSpan.FromSeconds(s.NbdTimeout),
                ReadOnly = s.ReadOnly,
                Log = log,
            });
        }
        if (s.Image is not null && RbdImageSpec.Matches(s.Image))
            return OpenRbd(s, log);
        if (s.Backend == "file")
        {
            if (s.Image is null)
                throw new UsageException("IMAGE is missing (or choose --backend memory or null with --size)");
            if (s.Size is not null)
                throw new UsageException("--size is for --backend memory or null; a file image has its own size");
            return FileBackend.Open(s.Image, s.ReadOnly, s.BlkSize);
        }
        if (s.Image is not null)
            throw new UsageException($"--backend {s.Backend} takes no IMAGE");
        if (s.Size is null)
            throw new UsageException($"--backend {s.Backend} needs --size");
        if (!Sizes.TryParse(s.Size, out var bytes) || bytes == 0 || bytes % (ulong)BlkLayout.SectorSize != 0)
            throw new UsageException($"--size '{s.Size}' is not a positive multiple of 512 bytes (use a number with an optional K, M or G suffix)");
        if (bytes % s.BlkSize != 0)
            throw new UsageException($"--size {bytes} is not a multiple of --blk-size {s.BlkSize}");
        return s.Backend == "memory" ? new MemoryBackend(bytes, s.ReadOnly, s.BlkSize) : new NullBackend(bytes, s.ReadOnly, s.BlkSize);
    }

    private static RbdBackend OpenRbd(ServeSettings s, ILogSink log)
    {
        if (s.Backend != "file")
            throw new UsageException($"--backend {s.Backend} takes no IMAGE; an rbd: image needs no --backend");
        if (s.Size is not null)
            throw new UsageException("--size is for --backend memory or null; an RBD image has its own size");
        var spec = RbdImageSpec.Parse(s.Image!);
        var backend = RbdBackend.Open(spec, s.Ceph with { ReadOnly = s.ReadOnly }, log);
        if (backend.Capacity % s.BlkSize != 0)
        {
            backend.Dispose();
            throw new UsageException($"image '{spec}' is {backend.Capacity} bytes, not a multiple of --blk-size {s.BlkSize}");
        }
        return backend;
    }
}
