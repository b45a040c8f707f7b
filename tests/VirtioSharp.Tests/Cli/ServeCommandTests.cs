using VirtioSharp.Cli.Commands;
using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.Support;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Tests.Cli;

/// <summary><c>vblk serve</c>'s checks of its options: one line and exit code 2 for a mistake, a clean start and stop otherwise.</summary>
public sealed class ServeCommandTests
{
    private static ServeSettings Settings(string? socket, string? image = null, string backend = "file", string? size = null, AioMode aio = AioMode.Auto) =>
        new(image, socket, ReadOnly: false, NumQueues: 1, QueueSize: 256, BlkSize: 512, Serial: "t", Backend: backend, Size: size,
            Strict: StrictMode.Off, Verbose: false, Aio: aio);

    [Fact]
    public void Aio_io_uring_without_a_file_image_is_refused_in_one_line()
    {
        using var dir = new TempDir();
        var error = new StringWriter();
        var code = ServeCommand.Run(Settings(dir.File("s.sock"), backend: "null", size: "1M", aio: AioMode.IoUring), error);
        Assert.Equal(ServeCommand.UsageError, code);
        Assert.Equal("vblk serve: --aio io_uring is for a file image; --backend null does no file I/O", error.ToString().TrimEnd());
        Assert.False(File.Exists(dir.File("s.sock")));
    }

    [Fact]
    public void Without_socket_or_socket_activation_the_missing_socket_is_named_in_one_line()
    {
        var error = new StringWriter();
        var code = ServeCommand.Run(Settings(null, backend: "null", size: "1M"), error);
        Assert.Equal(ServeCommand.UsageError, code);
        Assert.Equal("vblk serve: --socket is required (unless systemd passes the listening socket: LISTEN_FDS, LISTEN_PID)", error.ToString().TrimEnd());
    }

    [Theory]
    [InlineData(AioMode.Auto)]
    [InlineData(AioMode.IoUring)]
    [InlineData(AioMode.Sync)]
    public async Task A_file_image_is_served_with_each_aio_mode_until_stopped(AioMode aio)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.img");
        File.WriteAllBytes(image, new byte[1 << 20]);
        var socket = dir.File("s.sock");
        using var stop = new CancellationTokenSource();
        var error = new StringWriter();
        var run = Task.Run(() => ServeCommand.Run(Settings(socket, image, aio: aio), error, stop.Token));
        ServerReady.WaitForFile(socket, () => run.IsCompleted, () => error.ToString());
        using (var f = TestFrontEnd.Connect(socket))
            Assert.NotEqual(0UL, f.Negotiate());
        stop.Cancel();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromMilliseconds(TestFrontEnd.Timeout)));
        Assert.Equal("", error.ToString());
    }

    [Theory]
    [InlineData(2_048_000, false)] // 4000 sectors: 1.95 MiB, not "1 MiB"
    [InlineData(2_048_100, true)] // 100 bytes past the last whole sector
    public async Task The_start_up_line_gives_the_exact_size_and_warns_of_a_partial_last_sector(int length, bool ragged)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.img");
        File.WriteAllBytes(image, new byte[length]);
        var socket = dir.File("s.sock");
        using var stop = new CancellationTokenSource();
        var log = new ListLogSink();
        var run = Task.Run(() => ServeCommand.Run(Settings(socket, image, aio: AioMode.Sync), new StringWriter(), stop.Token, log));
        TestServer.Eventually(() => log.Contains("QEMU: -chardev"), "the start-up lines");
        stop.Cancel();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromMilliseconds(TestFrontEnd.Timeout)));
        var lines = string.Join("\n", log.Lines.Select(l => $"{l.Level}: {l.Message}"));
        Assert.Contains($"Info: serving file {image} (2048000 bytes = 1.95 MiB)", lines);
        var warning = $"Warning: disk image '{image}' is 2048100 bytes, not a multiple of 512: its last 100 bytes (a partial sector) are not served";
        if (ragged)
            Assert.Contains(warning, lines);
        else
            Assert.DoesNotContain("not a multiple of 512", lines);
    }
}
