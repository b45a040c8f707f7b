using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using VirtioSharp.Block;
using VirtioSharp.Block.Nbd;
using VirtioSharp.Cli.Metrics;
using VirtioSharp.Diagnostics;
using VirtioSharp.Rbd;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Systemd;

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

        IMAGE may be a Ceph RBD image, rbd:POOL/IMAGE or rbd:POOL/IMAGE@SNAP (a snapshot is served
        read-only), reached through librbd with --ceph-conf and --ceph-id:

          vblk serve rbd:vms/disk1 --ceph-conf /etc/ceph/ceph.conf --ceph-id vms --socket /run/vblk/disk1.sock

        A request the cluster does not answer within --ceph-io-timeout seconds (default 30) fails,
        and the guest sees an I/O error; the back-end keeps serving and later requests succeed
        once the cluster is back.

        A disk that grows or shrinks while served is reported to the guest as a configuration
        change (vhost-user: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, which QEMU's vhost-user-blk
        passes on; Linux then shows the new size). An rbd: image is watched (rbd resize is
        noticed at once); for an image file, send SIGHUP after resizing it (truncate -s,
        qemu-img resize).

        One front-end is served at a time; when it disconnects the back-end waits for the next
        one on the same socket. SIGINT or SIGTERM stops it after flushing the image.

        Under systemd, a .socket unit can own the listening socket (socket activation: the socket
        arrives as descriptor 3 with LISTEN_FDS and LISTEN_PID; --socket is then optional) and
        Type=notify hears READY=1 once the back-end accepts, STOPPING=1 when it stops. Restarting
        the service then never refuses a connection: QEMU's reconnect waits in the socket's backlog.
        Sample units: docs/systemd/.
        """;

    public static Command Create()
    {
        var image = new Argument<string?>("IMAGE")
        {
            Description = "Raw disk image to serve (with --backend file, the default), an NBD export (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH), or a Ceph image rbd:POOL/IMAGE[@SNAP]",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var socket = new Option<string?>("--socket") { Description = "Unix socket path to listen on (a stale socket file is replaced); optional when systemd passes the socket (LISTEN_FDS)" };
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
        var nbdConnections = new Option<int>("--nbd-connections")
        {
            Description = "Connections to an NBD server (1..64); more than one only when the server allows multi-conn (NBD_FLAG_CAN_MULTI_CONN)",
            DefaultValueFactory = _ => 1,
        };
        var nbdTimeout = new Option<double>("--nbd-timeout")
        {
            Description = "Seconds an NBD request may wait for its reply; then the connection is dropped and its requests fail with EIO (the next request reconnects)",
            DefaultValueFactory = _ => 30,
        };
        var cephConf = new Option<string?>("--ceph-conf") { Description = "ceph.conf for an rbd: image (default: $CEPH_CONF, then /etc/ceph/ceph.conf)" };
        var cephId = new Option<string>("--ceph-id") { Description = "Ceph user for an rbd: image, without 'client.'", DefaultValueFactory = _ => "admin" };
        var cephIoTimeout = new Option<int>("--ceph-io-timeout")
        {
            Description = "Seconds an rbd: request waits for the OSDs before it fails with an I/O error (rados_osd_op_timeout; 0: wait forever)",
            DefaultValueFactory = _ => RbdOptions.DefaultIoTimeoutSeconds,
        };
        var cephConnectTimeout = new Option<int>("--ceph-connect-timeout")
        {
            Description = "Seconds to wait for the Ceph monitors at start (client_mount_timeout)",
            DefaultValueFactory = _ => 15,
        };
        var strict = StrictOption.Create();
        var verbose = new Option<bool>("--verbose") { Description = "Log every vhost-user message" };
        var limits = new ServeLimitOptions();
        var pollUs = new Option<int>("--poll-us")
        {
            Description = $"Microseconds a queue worker keeps looking at its ring after a drain before it sleeps, with the driver's notifications off; adapted down when it finds nothing (0: sleep at once; default {DefaultPollUs})",
            DefaultValueFactory = _ => DefaultPollUs,
        };
        var metrics = new Option<string?>("--metrics") { Description = "Serve Prometheus metrics over HTTP at HOST:PORT/metrics (e.g. 127.0.0.1:9100); SIGUSR1 logs the same numbers" };

        var record = new Option<string?>("--record") { Description = "Record the rings of each connection to FILE (later connections: FILE-2, FILE-3 ...); render with vblk view FILE --html OUT" };
        var recordLimit = new Option<int>("--record-limit") { Description = "Requests recorded per connection (1..100000); recording I/O is synchronous", DefaultValueFactory = _ => 200 };

        var noPacked = new Option<bool>("--no-packed") { Description = "Do not offer packed virtqueues (VIRTIO_F_RING_PACKED, spec 2.8); front-ends then use split rings" };

        // Test-only, hidden from --help: makes a kill land on requests taken and not yet returned.
        var holdCompletions = new Option<int>("--debug-hold-completions-ms")
        {
            Description = "TESTING ONLY: keep each finished request this many milliseconds before returning it to the guest, due ones newest first (crash-recovery tests)",
            Hidden = true,
        };

        var command = new Command("serve", Description) { image, socket, readOnly, numQueues, queueSize, blkSize, serial, backend, size, aio,
            nbdConnections, nbdTimeout, cephConf, cephId, cephIoTimeout, cephConnectTimeout, strict, verbose, pollUs, metrics, record, recordLimit, noPacked, holdCompletions };
        foreach (var option in limits.All)
            command.Options.Add(option);
        command.SetAction(result =>
        {
            BlkLimits? parsedLimits;
            try
            {
                parsedLimits = limits.Parse(result);
            }
            catch (ArgumentException e)
            {
                result.InvocationConfiguration.Error.WriteLine($"vblk serve: {e.Message}");
                return UsageError;
            }
            var settings = new ServeSettings(
                result.GetValue(image), result.GetValue(socket), result.GetValue(readOnly), result.GetValue(numQueues),
                result.GetValue(queueSize), result.GetValue(blkSize), result.GetValue(serial)!, result.GetValue(backend)!,
                result.GetValue(size), StrictOption.Parse(result, strict), result.GetValue(verbose), ParseAio(result.GetValue(aio)!),
                result.GetValue(nbdConnections), result.GetValue(nbdTimeout),
                parsedLimits, result.GetValue(pollUs), result.GetValue(metrics),
                result.GetValue(record), result.GetValue(recordLimit))
            {
                Ceph = new RbdOptions
                {
                    ConfPath = result.GetValue(cephConf),
                    Id = result.GetValue(cephId)!,
                    IoTimeoutSeconds = result.GetValue(cephIoTimeout),
                    ConnectTimeoutSeconds = result.GetValue(cephConnectTimeout),
                },
                OfferPacked = !result.GetValue(noPacked),
                HoldCompletionsMs = result.GetValue(holdCompletions),
            };
            return Run(settings, result.InvocationConfiguration.Error);
        });
        return command;
    }

    /// <summary>--poll-us when none is given (docs/benchmarks.md, "Polling").</summary>
    public const int DefaultPollUs = 0;

    /// <summary>Everything <c>vblk serve</c> was asked to do.</summary>
    public sealed record ServeSettings(string? Image, string? Socket, bool ReadOnly, int NumQueues, int QueueSize, uint BlkSize,
        string Serial, string Backend, string? Size, StrictMode Strict, bool Verbose, AioMode Aio = AioMode.Auto,
        int NbdConnections = 1, double NbdTimeout = 30, BlkLimits? Limits = null, int PollUs = DefaultPollUs, string? Metrics = null,
        string? Record = null, int RecordLimit = 200)
    {
        /// <summary>How to reach Ceph for an rbd: IMAGE (ReadOnly comes from the settings' own flag).</summary>
        public RbdOptions Ceph { get; init; } = new();

        /// <summary>Offer VIRTIO_F_RING_PACKED (2.8); --no-packed turns it off.</summary>
        public bool OfferPacked { get; init; } = true;

        /// <summary>Testing only (--debug-hold-completions-ms): hold each completion this long.</summary>
        public int HoldCompletionsMs { get; init; }
    }

    private static AioMode ParseAio(string value) => value switch
    {
        "io_uring" => AioMode.IoUring,
        "sync" => AioMode.Sync,
        _ => AioMode.Auto,
    };

    /// <summary>Runs the server until SIGINT/SIGTERM (or <paramref name="stop"/>). Expected mistakes are one line on <paramref name="error"/> and exit code 2.</summary>
    public static int Run(ServeSettings s, TextWriter error, CancellationToken stop = default, ILogSink? logSink = null)
    {
        var log = logSink ?? new ConsoleLogSink(s.Verbose ? LogLevel.Debug : LogLevel.Info);
        IBlockBackend? backend = null;
        VirtioSharp.Native.UnixFdSocket? activated = null;
        ServiceNotifier? notifier = null;
        ServeRecorder? recorder = null;
        using var signals = new StopSignal();
        try
        {
            if (s.HoldCompletionsMs is < 0 or > 60_000)
                throw new UsageException($"--debug-hold-completions-ms {s.HoldCompletionsMs} is not in 0..60000");
            if (s.PollUs is < 0 or > 1_000_000)
                throw new UsageException($"--poll-us {s.PollUs} must be 0..1000000 microseconds");
            // Taken first, so the service manager's socket is ours (close-on-exec) before anything else runs.
            activated = SocketActivation.TryTake(out var activatedPath, out var activatedName);
            var socketPath = SocketPathFor(s, activated, activatedPath, activatedName);
            notifier = ServiceNotifier.FromEnvironment();
            recorder = OpenRecorder(s, log);
            backend = OpenBackend(s, log);
            var options = new BlkDeviceOptions
            {
                NumQueues = s.NumQueues,
                QueueSize = s.QueueSize,
                Serial = s.Serial,
                ReadOnly = s.ReadOnly,
                Strict = s.Strict,
                Limits = s.Limits,
                OfferPacked = s.OfferPacked,
                Log = log,
                Trace = recorder,
            };
            var device = new BlkDevice(backend, options);
            if (recorder is not null)
                device.Breaches.Observer = recorder.Breach;
            var aioNote = DescribeAio(s, backend);
            using var server = new VhostUserBlkServer(device, socketPath, log) { Aio = s.Aio, PollMicroseconds = s.PollUs, HoldCompletionsMs = s.HoldCompletionsMs };
            using var metrics = new ServeMetrics(device, server);
            if (s.Metrics is { } address)
                metrics.Serve(address);
            if (activated is not null)
                server.Start(activated);
            else
                server.Start();
            if (s.HoldCompletionsMs > 0)
                log.Warn($"--debug-hold-completions-ms {s.HoldCompletionsMs}: every completion is held that long (a testing aid, not for real guests)");
            log.Info($"serving {backend.Description} ({Sizes.Exact(backend.Capacity)}{(device.Config.BlkSize != 512 ? $", {device.Config.BlkSize}-byte blocks" : "")}{(s.ReadOnly || backend.ReadOnly ? ", read-only" : "")}) "
                + $"with {s.NumQueues} queue{(s.NumQueues == 1 ? "" : "s")} of up to {s.QueueSize}{aioNote}");
            if (backend is FileBackend file && file.FileLength != file.Capacity)
                log.Warn($"disk image '{file.Path}' is {file.FileLength} bytes, not a multiple of 512: its last {file.FileLength - file.Capacity} bytes (a partial sector) are not served");
            log.Info($"QEMU: -chardev socket,id=vblk0,path={socketPath},reconnect=1 -device vhost-user-blk-pci,chardev=vblk0,num-queues={s.NumQueues}");
            if (s.Limits is not null || s.PollUs > 0 || s.Metrics is not null)
                log.Info(DescribeControls(s));
            using var usr1 = PosixSignalRegistration.Create((PosixSignal)SigUsr1, context =>
            {
                context.Cancel = true;
                foreach (var line in metrics.Describe())
                    log.Info(line);
            });
            // SIGHUP: look at the disk's size again (an image file resized while served).
            var served = backend;
            using var hup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true;
                if (served is not IResizableBackend resizable)
                    log.Info($"SIGHUP: {served.Description} cannot change size while served");
                else if (!resizable.RefreshCapacity())
                    log.Info($"SIGHUP: {served.Description} is still {served.Capacity} bytes");
            });
            Tell(notifier, $"READY=1\nSTATUS=serving {backend.Description} on {socketPath}", log);
            signals.Wait(log, stop);
            Tell(notifier, "STOPPING=1", log);
            server.Stop(); // closes the connection, stops the rings, flushes
            return 0;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or UsageException or FormatException)
        {
            error.WriteLine($"vblk serve: {e.Message}");
            return UsageError;
        }
        finally
        {
            recorder?.Dispose();
            backend?.Dispose();
            activated?.Dispose();
            notifier?.Dispose();
        }
    }

    /// <summary>The socket's path: --socket, or the one systemd passed (which --socket, if given, must name).</summary>
    private static string SocketPathFor(ServeSettings s, VirtioSharp.Native.UnixFdSocket? activated, string activatedPath, string? activatedName)
    {
        if (activated is null)
            return s.Socket ?? throw new UsageException("--socket is required (unless systemd passes the listening socket: LISTEN_FDS, LISTEN_PID)");
        if (s.Socket is not null && activatedPath.Length > 0 && Path.GetFullPath(s.Socket) != Path.GetFullPath(activatedPath))
            throw new UsageException($"--socket {s.Socket} differs from the socket systemd passed, which is bound to {activatedPath}");
        if (activatedPath.Length > 0)
            return activatedPath;
        return s.Socket ?? $"descriptor {SocketActivation.FirstFd}{(activatedName is null ? "" : $" ({activatedName})")}";
    }

    /// <summary>sd_notify: a failure to notify is logged, never fatal (the service manager's timeout speaks for it).</summary>
    private static void Tell(ServiceNotifier? notifier, string state, ILogSink log)
    {
        if (notifier is not null && !notifier.Notify(state, out var error))
            log.Warn(error!);
    }

    private const int SigUsr1 = 10; // Linux

    private static string DescribeControls(ServeSettings s)
    {
        var parts = new List<string>();
        if (s.Limits is { } l)
        {
            static string Rate(double? v, string unit) => v is { } x ? string.Create(CultureInfo.InvariantCulture, $"{x:0.###} {unit}") : "";
            var rates = new[]
            {
                l.IopsTotal is null ? "" : $"{Rate(l.IopsTotal, "requests/s")}", l.IopsRead is null ? "" : $"reads {Rate(l.IopsRead, "requests/s")}",
                l.IopsWrite is null ? "" : $"writes {Rate(l.IopsWrite, "requests/s")}", l.BpsTotal is null ? "" : $"{Rate(l.BpsTotal, "bytes/s")}",
                l.BpsRead is null ? "" : $"reads {Rate(l.BpsRead, "bytes/s")}", l.BpsWrite is null ? "" : $"writes {Rate(l.BpsWrite, "bytes/s")}",
            }.Where(r => r.Length > 0);
            parts.Add($"limits: {string.Join(", ", rates)} (requests beyond them wait in the ring)");
        }
        parts.Add(s.PollUs > 0 ? $"queue workers poll up to {s.PollUs} us before sleeping" : "queue workers sleep at once (no polling)");
        if (s.Metrics is not null)
            parts.Add($"metrics at http://{s.Metrics}/metrics");
        return string.Join("; ", parts);
    }

    /// <summary>--record: checked before anything starts, so a bad path is one line.</summary>
    private static ServeRecorder? OpenRecorder(ServeSettings s, ILogSink log)
    {
        if (s.RecordLimit is < 1 or > 100_000)
            throw new UsageException($"--record-limit must be from 1 to 100000, not {s.RecordLimit}");
        if (s.Record is null)
            return null;
        var dir = Path.GetDirectoryName(Path.GetFullPath(s.Record));
        if (dir is not null && !Directory.Exists(dir))
            throw new UsageException($"--record: folder '{dir}' does not exist");
        return new ServeRecorder(s.Record, s.RecordLimit, log);
    }

    /// <summary>Checks --aio against the backend and the kernel; the words the start-up line ends with.</summary>
    private static string DescribeAio(ServeSettings s, IBlockBackend backend)
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

    private static IBlockBackend OpenBackend(ServeSettings s, ILogSink log)
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
        if (!TryParseSize(s.Size, out var bytes) || bytes == 0 || bytes % (ulong)BlkLayout.SectorSize != 0)
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

    /// <summary>
    /// SIGINT and SIGTERM, caught from the start of <see cref="Run"/>: a signal that arrives while
    /// the server is still starting (a service manager stopping it at once) still stops it cleanly.
    /// </summary>
    private sealed class StopSignal : IDisposable
    {
        private readonly ManualResetEventSlim _signalled = new();
        private readonly PosixSignalRegistration _sigint;
        private readonly PosixSignalRegistration _sigterm;
        private string? _which;

        public StopSignal()
        {
            _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        }

        private void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true; // we stop cleanly ourselves
            _which ??= context.Signal.ToString();
            _signalled.Set();
        }

        public void Wait(ILogSink log, CancellationToken stop)
        {
            using var cancel = stop.Register(_signalled.Set);
            _signalled.Wait();
            log.Info($"stopping ({_which ?? "asked to"}): closing the connection and flushing the image");
        }

        public void Dispose()
        {
            _sigint.Dispose();
            _sigterm.Dispose();
            _signalled.Dispose();
        }
    }

    /// <summary>A mistake in how vblk serve was called.</summary>
    private sealed class UsageException(string message) : Exception(message);
}
