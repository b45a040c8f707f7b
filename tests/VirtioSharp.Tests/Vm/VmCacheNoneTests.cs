using System.Text.RegularExpressions;

namespace VirtioSharp.Tests.Vm;

/// <summary>
/// One boot of the test guest (2 vCPUs, 2 queues) on <c>vblk serve --cache none</c>: the image
/// lies on a disk file system (the temporary folder, or the repository's .cache when that is
/// tmpfs or ramfs), so the back-end opens it with O_DIRECT and hands the guest's writes to each
/// queue's io_uring. The guest runs fio with crc32c verify at depth 32; the back-end's counters
/// (SIGUSR1) are read before it stops.
/// </summary>
public sealed class VblkServeCacheNoneFixture : IDisposable
{
    public VblkServeCacheNoneFixture()
    {
        LinuxGuest.EnsureBuilt();
        WorkDir = Directory.CreateTempSubdirectory("vblk-vm-direct-").FullName;
        FileSystem = FileSystemOf(WorkDir);
        if (FileSystem is "tmpfs" or "ramfs")
        {
            Directory.Delete(WorkDir);
            WorkDir = Directory.CreateDirectory(Path.Combine(Repo.Root, ".cache", $"vblk-vm-direct-{Guid.NewGuid():N}")).FullName;
            FileSystem = FileSystemOf(WorkDir);
        }
        Image = Path.Combine(WorkDir, "disk.img");
        using (var f = new FileStream(Image, FileMode.CreateNew))
            f.SetLength(128L << 20); // the fio job writes [96,128) MiB
        var socket = Path.Combine(WorkDir, "vblk.sock");
        using var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", Image, "--socket", socket, "--num-queues", "2", "--cache", "none", "--strict=fail"]);
        server.WaitForSocket(socket, TimeSpan.FromSeconds(30));
        Guest = LinuxGuest.Boot(socket, "fio", vcpus: 2, queues: 2, WorkDir, "no_timer_check");
        // The counters as the operator sees them: SIGUSR1 logs one line per queue, then the image's.
        TestNative.Kill(server.Pid, 10);
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!server.Output.Contains("image: ", StringComparison.Ordinal) && DateTime.UtcNow < until && !server.HasExited)
            Thread.Sleep(50);
        ServerExit = server.Stop(TimeSpan.FromSeconds(30));
        ServerLog = server.Output;
    }

    private static string FileSystemOf(string dir)
    {
        var (code, output) = Repo.Run("stat", ["-f", "-c", "%T", dir], TimeSpan.FromSeconds(10));
        if (code != 0)
            throw new InvalidOperationException($"stat -f {dir}: exit {code}\n{output}");
        return output.Trim();
    }

    public string WorkDir { get; }
    /// <summary>The type of the file system the image lies on (stat -f).</summary>
    public string FileSystem { get; }
    public string Image { get; }
    public LinuxGuest.Run Guest { get; }
    public int ServerExit { get; }
    public string ServerLog { get; }

    public void Dispose() => Directory.Delete(WorkDir, recursive: true);
}

[Trait("Category", "Vm")]
public sealed partial class VmCacheNoneTests(VblkServeCacheNoneFixture vm) : IClassFixture<VblkServeCacheNoneFixture>
{
    [Fact]
    public void Guest_fio_verify_at_depth_32_over_2_queues_passes_with_the_guests_writes_on_io_uring_with_O_DIRECT()
    {
        Assert.True(vm.Guest.Verdict("fio").StartsWith("PASS", StringComparison.Ordinal), $"guest job fio: {vm.Guest.Verdict("fio")}\n{vm.Guest.Output}\n--- vblk serve ---\n{vm.ServerLog}");
        Assert.DoesNotContain(vm.FileSystem, new[] { "tmpfs", "ramfs" });
        // Opened with O_DIRECT, writes on io_uring with many in flight per queue.
        Assert.Contains("; cache none (O_DIRECT), ", vm.ServerLog, StringComparison.Ordinal);
        Assert.Contains("reads, writes and flushes through io_uring", vm.ServerLog, StringComparison.Ordinal);
        Assert.DoesNotContain("do file I/O synchronously", vm.ServerLog, StringComparison.Ordinal);

        var queues = QueueCounters().Matches(vm.ServerLog);
        Assert.True(queues.Count == 2, $"SIGUSR1 logged {queues.Count} queue lines, not 2\n{vm.ServerLog}");
        long bounced = 0, pageCached = 0;
        foreach (Match q in queues)
        {
            var writes = long.Parse(q.Groups["writes"].Value);
            var onRing = long.Parse(q.Groups["ring"].Value);
            bounced += long.Parse(q.Groups["bounced"].Value);
            pageCached += long.Parse(q.Groups["cached"].Value);
            // Both queues carried fio's writes, and those that went straight to the disk went through the queue's io_uring.
            Assert.True(writes > 0 && onRing > 0 && onRing <= writes, $"queue {q.Groups["q"].Value}: {writes} writes, {onRing} on io_uring\n{vm.ServerLog}");
        }
        // Linux's virtio-blk hands page-aligned buffers at 4 KiB offsets: nothing needed the bounce buffer or the page cache.
        Assert.True(bounced == 0 && pageCached == 0, $"{bounced} bounced, {pageCached} through the page cache\n{vm.ServerLog}");
        Assert.True(vm.ServerExit == 0, $"vblk serve exited with {vm.ServerExit}\n{vm.ServerLog}");
        Assert.DoesNotContain("driver breach", vm.ServerLog, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"queue (?<q>\d+): \d+ reads \(\d+ bytes\), (?<writes>\d+) writes .*; (?<bounced>\d+) bounced, (?<cached>\d+) through the page cache, (?<ring>\d+) direct writes through io_uring")]
    private static partial Regex QueueCounters();
}
