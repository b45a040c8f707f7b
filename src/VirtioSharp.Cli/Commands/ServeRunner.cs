using System.Runtime.InteropServices;
using VirtioSharp.Block;
using VirtioSharp.Cli.Metrics;
using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Systemd;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// <c>vblk serve</c>'s lifecycle: takes the service manager's socket, opens the recorder and the
/// backend, builds the device and the server, announces readiness, serves until a stop signal,
/// and releases everything in order.
/// </summary>
internal static class ServeRunner
{
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
            var queueCpus = s.QueueCpus is { } cpuList ? VirtioSharp.Native.CpuList.Parse(cpuList, "--queue-cpus", Environment.ProcessorCount) : null;
            // Taken first, so the service manager's socket is ours (close-on-exec) before anything else runs.
            activated = SocketActivation.TryTake(out var activatedPath, out var activatedName);
            var socketPath = SocketPathFor(s, activated, activatedPath, activatedName);
            notifier = ServiceNotifier.FromEnvironment();
            recorder = OpenRecorder(s, log);
            backend = ServeBackends.Open(s, log);
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
            var aioNote = ServeBackends.DescribeAio(s, backend);
            using var server = new VhostUserBlkServer(device, socketPath, log) { Aio = s.Aio, PollMicroseconds = s.PollUs, HoldCompletionsMs = s.HoldCompletionsMs, QueueCpus = queueCpus };
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
            if (s.Limits is not null || s.PollUs > 0 || s.Metrics is not null || s.QueueCpus is not null)
                log.Info(s.DescribeControls());
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
            signals.Wait(log, stop, backend.FlushIgnored);
            Tell(notifier, "STOPPING=1", log);
            server.Stop(); // closes the connection, stops the rings, flushes (unless the backend ignores flushes)
            return 0;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or UsageException or FormatException)
        {
            error.WriteLine($"vblk serve: {e.Message}");
            return ServeCommand.UsageError;
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
}
