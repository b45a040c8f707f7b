using System.CommandLine;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Rbd;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// <c>vblk serve IMAGE --socket PATH</c>: its options and help, parsed into <see cref="ServeSettings"/>
/// for <see cref="ServeRunner"/>, which serves a disk to a virtual machine as a vhost-user-blk
/// back-end until SIGINT or SIGTERM, then flushes the image and exits.
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
        one on the same socket. SIGINT or SIGTERM stops it after flushing the image
        (with --cache unsafe, which ignores flushes, without).

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
        var blkSize = new Option<uint?>("--blk-size") { Description = "Logical block size reported to the guest (512..65536, power of two); default 512, or with --cache none the file system's logical block size" };
        var cache = new Option<string?>("--cache")
        {
            Description = "Host page cache use of a file image, as QEMU's cache modes: writeback (buffered I/O, the default), none (O_DIRECT: "
                + "no page cache, aligned requests go straight to the disk, reads and writes many in flight through io_uring; unaligned guest buffers "
                + "are copied through an aligned per-queue buffer), unsafe (buffered, and FLUSH is acknowledged without fdatasync: a host crash loses data). "
                + "Only for file images",
        };
        cache.Validators.Add(r =>
        {
            var value = r.GetValueOrDefault<string?>();
            if (value is not null && !FileCacheModes.TryParse(value, out _))
                r.AddError($"--cache '{value}' is not a cache mode: use writeback, none or unsafe");
        });
        var serial = new Option<string>("--serial") { Description = "Serial number the guest reads with GET_ID (at most 20 bytes)", DefaultValueFactory = _ => "virtiosharp" };
        var backend = new Option<string>("--backend") { Description = "Storage: file (IMAGE), memory (a RAM disk of --size), null (reads zeroes, drops writes)", DefaultValueFactory = _ => "file" };
        backend.AcceptOnlyFromAmong("file", "memory", "null");
        var size = new Option<string?>("--size") { Description = "Disk size for --backend memory or null, in bytes or with K, M, G suffix (e.g. 64M)" };
        var aio = new Option<string>("--aio")
        {
            Description = "File I/O per queue: io_uring (up to 256 reads and flushes in flight, completed in any order; writes too with --cache none, otherwise synchronous), sync (one request at a time), auto (io_uring where the kernel allows it)",
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
        var queueCpus = new Option<string?>("--queue-cpus")
        {
            Description = "Pin queue i's worker thread to entry i mod count of this CPU list (for example 0,1 or 0-3), so a queue stays on one core, next to the front-end's thread of the same queue when it is pinned the same way (vblk bench --queue-cpus); default: not pinned",
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

        var command = new Command("serve", Description) { image, socket, readOnly, numQueues, queueSize, blkSize, serial, backend, size, aio, cache,
            nbdConnections, nbdTimeout, cephConf, cephId, cephIoTimeout, cephConnectTimeout, strict, verbose, pollUs, queueCpus, metrics, record, recordLimit, noPacked, holdCompletions };
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
                result.GetValue(queueSize), result.GetValue(blkSize) ?? 0, result.GetValue(serial)!, result.GetValue(backend)!,
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
                Cache = result.GetValue(cache) is { } mode && FileCacheModes.TryParse(mode, out var parsed) ? parsed : null,
                OfferPacked = !result.GetValue(noPacked),
                HoldCompletionsMs = result.GetValue(holdCompletions),
                QueueCpus = result.GetValue(queueCpus),
            };
            return Run(settings, result.InvocationConfiguration.Error);
        });
        return command;
    }

    /// <summary>--poll-us when none is given (docs/benchmarks.md, "Polling").</summary>
    public const int DefaultPollUs = 0;

    private static AioMode ParseAio(string value) => value switch
    {
        "io_uring" => AioMode.IoUring,
        "sync" => AioMode.Sync,
        _ => AioMode.Auto,
    };

    /// <summary>Runs the server until SIGINT/SIGTERM (or <paramref name="stop"/>). Expected mistakes are one line on <paramref name="error"/> and exit code 2.</summary>
    public static int Run(ServeSettings s, TextWriter error, CancellationToken stop = default, ILogSink? logSink = null) =>
        ServeRunner.Run(s, error, stop, logSink);
}
