using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// <c>vblk serve IMAGE --socket PATH</c>: serves a disk to a virtual machine as a vhost-user-blk
/// back-end. Runs until SIGINT or SIGTERM, then flushes the image and exits.
/// </summary>
public static class ServeCommand
{
    /// <summary>Exit code for a mistake on the command line or in the environment.</summary>
    public const int UsageError = 2;

    private const string Description = """
        Serve a disk image to a virtual machine as a vhost-user-blk back-end.

        The back-end listens on a Unix socket; QEMU connects to it. Guest RAM must be shared
        memory (memory-backend-memfd with share=on) so the back-end can map it. For example:

          vblk serve disk.img --socket /tmp/vblk.sock &
          qemu-system-x86_64 -m 1G \
            -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \
            -chardev socket,id=vblk0,path=/tmp/vblk.sock,reconnect=1 \
            -device vhost-user-blk-pci,chardev=vblk0,num-queues=1 ...

        One front-end is served at a time; when it disconnects the back-end waits for the next
        one on the same socket. SIGINT or SIGTERM stops it after flushing the image.
        """;

    public static Command Create()
    {
        var image = new Argument<string?>("IMAGE")
        {
            Description = "Raw disk image to serve (with --backend file, the default)",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var socket = new Option<string>("--socket") { Description = "Unix socket path to listen on (a stale socket file is replaced)", Required = true };
        var readOnly = new Option<bool>("--read-only") { Description = "Expose the disk read-only (VIRTIO_BLK_F_RO)" };
        var numQueues = new Option<int>("--num-queues") { Description = "Request queues offered (1..64); QEMU's num-queues must not exceed it", DefaultValueFactory = _ => 1 };
        var queueSize = new Option<int>("--queue-size") { Description = "Largest ring the front-end may use (power of two, 4..32768); QEMU's queue-size must not exceed it", DefaultValueFactory = _ => 256 };
        var blkSize = new Option<uint>("--blk-size") { Description = "Logical block size reported to the guest (512..65536, power of two)", DefaultValueFactory = _ => 512 };
        var serial = new Option<string>("--serial") { Description = "Serial number the guest reads with GET_ID (at most 20 bytes)", DefaultValueFactory = _ => "virtiosharp" };
        var backend = new Option<string>("--backend") { Description = "Storage: file (IMAGE), memory (a RAM disk of --size), null (reads zeroes, drops writes)", DefaultValueFactory = _ => "file" };
        backend.AcceptOnlyFromAmong("file", "memory", "null");
        var size = new Option<string?>("--size") { Description = "Disk size for --backend memory or null, in bytes or with K, M, G suffix (e.g. 64M)" };
        var aio = new Option<string>("--aio")
        {
            Description = "File I/O per queue: io_uring (up to 256 reads and flushes in flight, completed in any order; writes stay synchronous), sync (one request at a time), auto (io_uring where the kernel allows it)",
            DefaultValueFactory = _ => "auto",
        };
        aio.AcceptOnlyFromAmong("auto", "io_uring", "sync");
        var strict = StrictOption.Create();
        var verbose = new Option<bool>("--verbose") { Description = "Log every vhost-user message" };
        // Test-only, hidden from --help: makes a kill land on requests taken and not yet returned.
        var holdCompletions = new Option<int>("--debug-hold-completions-ms")
        {
            Description = "TESTING ONLY: keep each finished request this many milliseconds before returning it to the guest, due ones newest first (crash-recovery tests)",
            Hidden = true,
        };

        var command = new Command("serve", Description) { image, socket, readOnly, numQueues, queueSize, blkSize, serial, backend, size, aio, strict, verbose, holdCompletions };
        command.SetAction(result =>
        {
            var settings = new ServeSettings(
                result.GetValue(image), result.GetValue(socket)!, result.GetValue(readOnly), result.GetValue(numQueues),
                result.GetValue(queueSize), result.GetValue(blkSize), result.GetValue(serial)!, result.GetValue(backend)!,
                result.GetValue(size), StrictOption.Parse(result, strict), result.GetValue(verbose), ParseAio(result.GetValue(aio)!),
                result.GetValue(holdCompletions));
            return Run(settings, result.InvocationConfiguration.Error);
        });
        return command;
    }

    /// <summary>Everything <c>vblk serve</c> was asked to do.</summary>
    public sealed record ServeSettings(string? Image, string Socket, bool ReadOnly, int NumQueues, int QueueSize, uint BlkSize,
        string Serial, string Backend, string? Size, StrictMode Strict, bool Verbose, AioMode Aio = AioMode.Auto,
        int HoldCompletionsMs = 0);

    private static AioMode ParseAio(string value) => value switch
    {
        "io_uring" => AioMode.IoUring,
        "sync" => AioMode.Sync,
        _ => AioMode.Auto,
    };

    /// <summary>Runs the server until SIGINT/SIGTERM (or <paramref name="stop"/>). Expected mistakes are one line on <paramref name="error"/> and exit code 2.</summary>
    public static int Run(ServeSettings s, TextWriter error, CancellationToken stop = default)
    {
        var log = new ConsoleLogSink(s.Verbose ? LogLevel.Debug : LogLevel.Info);
        IBlockBackend? backend = null;
        try
        {
            if (s.HoldCompletionsMs is < 0 or > 60_000)
                throw new UsageException($"--debug-hold-completions-ms {s.HoldCompletionsMs} is not in 0..60000");
            backend = OpenBackend(s);
            var options = new BlkDeviceOptions
            {
                NumQueues = s.NumQueues,
                QueueSize = s.QueueSize,
                Serial = s.Serial,
                ReadOnly = s.ReadOnly,
                Strict = s.Strict,
                Log = log,
            };
            var device = new BlkDevice(backend, options);
            var aioNote = DescribeAio(s, backend);
            using var server = new VhostUserBlkServer(device, s.Socket, log) { Aio = s.Aio, HoldCompletionsMs = s.HoldCompletionsMs };
            server.Start();
            if (s.HoldCompletionsMs > 0)
                log.Warn($"--debug-hold-completions-ms {s.HoldCompletionsMs}: every completion is held that long (a testing aid, not for real guests)");
            log.Info($"serving {backend.Description} ({backend.Capacity >> 20} MiB{(device.Config.BlkSize != 512 ? $", {device.Config.BlkSize}-byte blocks" : "")}{(s.ReadOnly || backend.ReadOnly ? ", read-only" : "")}) "
                + $"with {s.NumQueues} queue{(s.NumQueues == 1 ? "" : "s")} of up to {s.QueueSize}{aioNote}");
            log.Info($"QEMU: -chardev socket,id=vblk0,path={s.Socket},reconnect=1 -device vhost-user-blk-pci,chardev=vblk0,num-queues={s.NumQueues}");
            WaitForSignal(log, stop);
            server.Stop(); // closes the connection, stops the rings, flushes
            return 0;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or UsageException)
        {
            error.WriteLine($"vblk serve: {e.Message}");
            return UsageError;
        }
        finally
        {
            backend?.Dispose();
        }
    }

    /// <summary>Checks --aio against the backend and the kernel; the words the start-up line ends with.</summary>
    private static string DescribeAio(ServeSettings s, IBlockBackend backend)
    {
        if (backend.AsyncFd < 0)
        {
            if (s.Aio == AioMode.IoUring)
                throw new UsageException($"--aio io_uring is for a file image; --backend {s.Backend} does no file I/O");
            return "";
        }
        if (s.Aio == AioMode.Sync)
            return "; file I/O synchronous per queue (--aio sync)";
        using var probe = VirtioSharp.Native.IoUring.TryCreate(4, out var why);
        if (probe is null)
        {
            if (s.Aio == AioMode.IoUring)
                throw new UsageException($"--aio io_uring: {why}");
            return $"; file I/O synchronous per queue ({why})";
        }
        return $"; reads and flushes through io_uring, up to {Math.Min(BlkDevice.MaxAsyncPerQueue, s.QueueSize)} in flight per queue";
    }

    private static IBlockBackend OpenBackend(ServeSettings s)
    {
        if (s.BlkSize < BlkLayout.SectorSize || s.BlkSize > 65536 || (s.BlkSize & (s.BlkSize - 1)) != 0)
            throw new UsageException($"--blk-size {s.BlkSize} must be a power of two between 512 and 65536");
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
        if (!TryParseSize(s.Size, out var bytes) || bytes == 0 || bytes % (ulong)BlkLayout.SectorSize != 0)
            throw new UsageException($"--size '{s.Size}' is not a positive multiple of 512 bytes (use a number with an optional K, M or G suffix)");
        if (bytes % s.BlkSize != 0)
            throw new UsageException($"--size {bytes} is not a multiple of --blk-size {s.BlkSize}");
        return s.Backend == "memory" ? new MemoryBackend(bytes, s.ReadOnly, s.BlkSize) : new NullBackend(bytes, s.ReadOnly, s.BlkSize);
    }

    /// <summary>Parses "4096", "64K", "512M", "2G" (binary multiples; "KiB"-style and "B" suffixes are accepted too).</summary>
    public static bool TryParseSize(string text, out ulong bytes)
    {
        bytes = 0;
        var t = text.Trim().ToUpperInvariant();
        if (t.EndsWith("IB", StringComparison.Ordinal))
            t = t[..^2]; // KiB -> K
        else if (t.EndsWith('B'))
            t = t[..^1]; // KB -> K, 512B -> 512
        var shift = 0;
        if (t.Length > 0)
        {
            shift = t[^1] switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, _ => 0 };
            if (shift != 0)
                t = t[..^1];
        }
        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            return false;
        if (n > ulong.MaxValue >> shift)
            return false;
        bytes = n << shift;
        return true;
    }

    private static void WaitForSignal(ILogSink log, CancellationToken stop)
    {
        using var signalled = new ManualResetEventSlim();
        string? which = null;
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true; // we stop cleanly ourselves
            which ??= context.Signal.ToString();
            signalled.Set();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var cancel = stop.Register(signalled.Set);
        signalled.Wait();
        log.Info($"stopping ({which ?? "asked to"}): closing the connection and flushing the image");
    }

    /// <summary>A mistake in how vblk serve was called.</summary>
    private sealed class UsageException(string message) : Exception(message);
}
