using System.CommandLine;
using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Cli.Commands;
using VirtioSharp.Cli.Frontend;
using VirtioSharp.Cli.Metrics;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Tests.Cli;

/// <summary>
/// <c>vblk serve --cache writeback|none|unsafe</c>: bytes round-trip through our front-end in each
/// mode on an image on a disk file system, and the log says a flush was done only where one was; unsafe makes no fdatasync; unaligned guest buffers are
/// bounced; direct I/O refused by the file system, an unknown mode and a non-file backend are one line.
/// </summary>
public sealed class CacheModeTests
{
    private static ServeSettings FileDisk(string socket, string? image, FileCacheMode? cache, string backend = "file", string? size = null) =>
        new(image, socket, ReadOnly: false, NumQueues: 1, QueueSize: 256, BlkSize: 0, Serial: "t", Backend: backend, Size: size,
            Strict: StrictMode.Off, Verbose: false)
        { Cache = cache };

    private static async Task<(int Code, string Out, string Err)> Run(Command command, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Theory]
    [InlineData(FileCacheMode.Writeback, "")]
    [InlineData(FileCacheMode.None, "; cache none (O_DIRECT), 512-byte alignment")]
    [InlineData(FileCacheMode.Unsafe, "; cache unsafe (flushes not synced)")]
    public async Task Each_mode_round_trips_vblk_io_verify_to_the_image_on_disk(FileCacheMode mode, string startNote)
    {
        using var dir = new TempDir(); // under the system's temporary folder: a disk file system here, not tmpfs
        var image = dir.File("disk.img");
        FileBackend.Create(image, 8 << 20);
        var socket = dir.File("s.sock");
        var log = new ListLogSink();
        var error = new StringWriter();
        using var stop = new CancellationTokenSource();
        var run = Task.Run(() => ServeCommand.Run(FileDisk(socket, image, mode), error, stop.Token, log));
        // The start-up lines follow listen(2); the socket file appears earlier, at bind(2).
        TestServer.Eventually(() => log.Contains("QEMU: -chardev") || run.IsCompleted, "the start-up lines");
        Assert.False(run.IsCompleted, error.ToString());

        var (code, output, err) = await Run(IoCommand.Create(), "verify", "--socket", socket, "--offset", "1M", "--length", "3M", "--seed", "7");
        Assert.True(code == 0, err);
        Assert.Contains("OK", output);
        (code, _, err) = await Run(IoCommand.Create(), "--socket", socket, "flush");
        Assert.True(code == 0, err);
        (code, output, err) = await Run(IoCommand.Create(), "--socket", socket, "info");
        Assert.True(code == 0, err);
        Assert.Contains("block size        512", output); // the logical block size of this disk (none), or the default

        stop.Cancel();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("", error.ToString());
        var started = log.Lines.Single(l => l.Message.StartsWith("serving file", StringComparison.Ordinal)).Message;
        if (startNote.Length > 0)
            Assert.Contains(startNote, started);
        else
            Assert.DoesNotContain("cache", started);

        // Every front-end that left (verify, flush, info) and the stop are logged as what was done:
        // unsafe ignores flushes, so no line may claim one.
        var lines = log.Lines.Select(l => l.Message).ToList();
        var stopping = lines.Single(l => l.StartsWith("stopping (", StringComparison.Ordinal));
        if (mode == FileCacheMode.Unsafe)
        {
            Assert.DoesNotContain(lines, l => l.Contains("flushed", StringComparison.Ordinal) || l.Contains("flushing", StringComparison.Ordinal));
            Assert.Equal(3, lines.Count(l => l.EndsWith("left as it is: --cache unsafe ignores flushes (the front-end left)", StringComparison.Ordinal)));
            Assert.Single(lines, l => l.EndsWith("left as it is: --cache unsafe ignores flushes (the server stopped)", StringComparison.Ordinal));
            Assert.EndsWith("closing the connection (--cache unsafe ignores flushes)", stopping);
        }
        else
        {
            Assert.DoesNotContain(lines, l => l.Contains("ignores flushes", StringComparison.Ordinal));
            Assert.Equal(3, lines.Count(l => l.StartsWith("flushed file", StringComparison.Ordinal) && l.EndsWith("(the front-end left)", StringComparison.Ordinal)));
            Assert.Single(lines, l => l.StartsWith("flushed file", StringComparison.Ordinal) && l.EndsWith("(the server stopped)", StringComparison.Ordinal));
            Assert.EndsWith("closing the connection and flushing the image", stopping);
        }

        // What the front-end verified is what the file holds.
        var expected = new byte[3 << 20];
        SeededPattern.Fill(expected, 1 << 20, 7);
        var actual = new byte[expected.Length];
        using (var f = File.OpenRead(image))
        {
            f.Position = 1 << 20;
            f.ReadExactly(actual);
        }
        Assert.True(expected.AsSpan().SequenceEqual(actual), "the image's bytes differ from the pattern written");
    }

    private sealed class Served : IDisposable
    {
        public readonly FileBackend Backend;
        public readonly BlkDevice Device;
        public readonly VhostUserBlkServer Server;
        public readonly VhostUserFrontendTransport Transport;
        public readonly BlkDriver Driver;

        public Served(TempDir dir, string image, FileCacheMode mode)
        {
            Backend = FileBackend.Open(image, cache: mode);
            Device = new BlkDevice(Backend, new BlkDeviceOptions { Log = new ListLogSink() });
            Server = new VhostUserBlkServer(Device, dir.File("vblk.sock"), new ListLogSink());
            Server.Start();
            Transport = VhostUserFrontendTransport.Connect(dir.File("vblk.sock"), new VhostUserFrontendOptions { MemorySize = 32 << 20 });
            Driver = BlkDriver.Start(Transport, new BlkDriverOptions { QueueSize = 16 });
        }

        public void Dispose()
        {
            Driver.Dispose();
            Transport.Dispose();
            Server.Dispose();
            Backend.Dispose();
        }
    }

    [Theory]
    [InlineData(FileCacheMode.Unsafe, false)]
    [InlineData(FileCacheMode.Writeback, true)]
    [InlineData(FileCacheMode.None, true)]
    public async Task Unsafe_acknowledges_flushes_without_fdatasync(FileCacheMode mode, bool synced)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.img");
        FileBackend.Create(image, 4 << 20);
        using var s = new Served(dir, image, mode);
        await s.Driver.WriteAsync(0, new byte[4096]);
        for (var i = 0; i < 5; i++)
            await s.Driver.FlushAsync(); // each acknowledged with VIRTIO_BLK_S_OK (FlushAsync throws otherwise)
        Assert.Equal(5, s.Device.Stats.Requests(BlkRequestType.Flush));
        if (synced)
            Assert.Equal(5, s.Backend.Syncs);
        else
            Assert.Equal(0, s.Backend.Syncs);
    }

    [Fact]
    public async Task Unaligned_guest_buffers_are_bounced_through_the_queue_buffer_and_counted()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.img");
        FileBackend.Create(image, 4 << 20);
        using var s = new Served(dir, image, FileCacheMode.None);
        Assert.NotNull(s.Backend.Alignment);
        Assert.True(s.Backend.Alignment!.Value.Memory > 1, "direct I/O asks for aligned memory here");
        var memory = s.Transport.Allocator.Memory;
        // Larger than a bounce buffer, so it goes through in pieces.
        const int length = (int)FileBackend.BounceSize + 64 * 1024;
        var odd = s.Transport.Allocator.Allocate(length + 4096, 4096) + 1; // 1 byte past a page: aligned to nothing
        var data = new byte[length];
        new Random(11).NextBytes(data);
        data.CopyTo(memory.GetSpan(odd, length));
        Assert.Equal(BlkStatus.Ok, await s.Driver.SubmitDirectAsync(BlkRequestType.Out, 8, odd, length));
        Assert.Equal(1, s.Backend.Bounced);

        // Read back through an odd buffer (bounced again) and an aligned one (straight).
        var back = s.Transport.Allocator.Allocate(length + 4096, 4096) + 3;
        Assert.Equal(BlkStatus.Ok, await s.Driver.SubmitDirectAsync(BlkRequestType.In, 8, back, length));
        Assert.True(data.AsSpan().SequenceEqual(memory.GetSpan(back, length)), "bounced read differs from bounced write");
        var aligned = s.Transport.Allocator.Allocate(length, 4096);
        Assert.Equal(BlkStatus.Ok, await s.Driver.SubmitDirectAsync(BlkRequestType.In, 8, aligned, length));
        Assert.True(data.AsSpan().SequenceEqual(memory.GetSpan(aligned, length)), "direct read differs from bounced write");
        Assert.Equal(2, s.Backend.Bounced);
        Assert.Equal(0, s.Backend.PageCached);

        using (var f = File.OpenRead(image))
        {
            var onDisk = new byte[length];
            f.Position = 8 * 512;
            f.ReadExactly(onDisk);
            Assert.True(data.AsSpan().SequenceEqual(onDisk), "the image differs from what was written");
        }
        using var metrics = new ServeMetrics(s.Device, s.Server);
        Assert.Contains(metrics.Describe(), l => l.Contains("2 bounced, 0 through the page cache", StringComparison.Ordinal));
    }

    [Fact]
    public void The_alignment_probe_agrees_with_statx()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.img");
        FileBackend.Create(image, 1 << 20);
        using var direct = DirectIo.Open(image, readOnly: true);
        var statx = DirectIo.FromStatx(direct);
        Assert.NotNull(statx); // Linux 6.1 and a disk file system report STATX_DIOALIGN
        var probed = DirectIo.Probe(direct);
        Assert.Equal(statx!.Value.Offset, probed.Offset);
        Assert.True(probed.Memory >= statx.Value.Memory);
    }

    [Fact]
    public void Cache_none_on_a_file_system_without_direct_io_is_refused_in_one_line()
    {
        // ramfs has no O_DIRECT (tmpfs has had it since Linux 6.6, so it no longer shows the refusal).
        using var dir = new TempDir();
        var mount = dir.File("ramfs");
        Directory.CreateDirectory(mount);
        Exec("mount", "-t", "ramfs", "ramfs", mount);
        try
        {
            var image = Path.Combine(mount, "disk.img");
            File.WriteAllBytes(image, new byte[1 << 20]);
            var error = new StringWriter();
            var code = ServeCommand.Run(FileDisk(dir.File("s.sock"), image, FileCacheMode.None), error);
            Assert.Equal(ServeCommand.UsageError, code);
            Assert.Equal($"vblk serve: --cache none: the file system of '{image}' has no direct I/O (open with O_DIRECT: Invalid argument); use --cache writeback",
                error.ToString().TrimEnd());
            Assert.False(File.Exists(dir.File("s.sock")));
        }
        finally
        {
            Exec("umount", mount);
        }
    }

    [Theory]
    [InlineData("null", "--cache is for a file image; --backend null has no page cache to choose")]
    [InlineData("memory", "--cache is for a file image; --backend memory has no page cache to choose")]
    [InlineData("nbd", "--cache is for a file image; an NBD export is cached (or not) by its server")]
    [InlineData("rbd", "--cache is for a file image; an rbd: image takes its cache from ceph.conf (rbd cache)")]
    public void Cache_with_a_backend_that_is_not_a_file_is_refused_in_one_line(string kind, string message)
    {
        using var dir = new TempDir();
        var settings = kind switch
        {
            "nbd" => FileDisk(dir.File("s.sock"), "nbd+unix:///x?socket=" + dir.File("nbd.sock"), FileCacheMode.Writeback),
            "rbd" => FileDisk(dir.File("s.sock"), "rbd:pool/image", FileCacheMode.None),
            _ => FileDisk(dir.File("s.sock"), null, FileCacheMode.Unsafe, backend: kind, size: "1M"),
        };
        var error = new StringWriter();
        Assert.Equal(ServeCommand.UsageError, ServeCommand.Run(settings, error));
        Assert.Equal($"vblk serve: {message}", error.ToString().TrimEnd());
    }

    [Fact]
    public void An_unknown_cache_mode_is_a_parse_error_naming_the_choices()
    {
        var parse = ServeCommand.Create().Parse(["disk.img", "--socket", "s.sock", "--cache", "directsync"]);
        var e = Assert.Single(parse.Errors);
        Assert.Equal("--cache 'directsync' is not a cache mode: use writeback, none or unsafe", e.Message);
        Assert.Empty(ServeCommand.Create().Parse(["disk.img", "--socket", "s.sock", "--cache", "none"]).Errors);
    }

    private static void Exec(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{tool} {string.Join(' ', args)}: {err}");
    }
}
