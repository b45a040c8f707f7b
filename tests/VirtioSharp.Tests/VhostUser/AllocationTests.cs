using VirtioSharp.Block;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>Runs alone: it measures allocations of the whole process.</summary>
[CollectionDefinition(nameof(AllocationTests), DisableParallelization = true)]
public class AllocationTestsCollection;

[Collection(nameof(AllocationTests))]
public class AllocationTests
{
    [Theory]
    [InlineData("memory", false)]
    [InlineData("file", false)] // reads and flushes through the worker's io_uring
    [InlineData("file", true)] // and each request kept in the inflight record
    [InlineData("memory", false, true)] // packed rings: their recorder hooks cost nothing while nobody records
    public void RequestsAllocateNothingOnTheDeviceSide(string disk, bool inflight, bool packed = false)
    {
        using var dir = new TempDir();
        IBlockBackend? file = null;
        if (disk == "file")
        {
            FileBackend.Create(dir.File("disk.img"), TestServer.DiskSize);
            file = FileBackend.Open(dir.File("disk.img"));
        }
        using var server = new TestServer(backend: file);
        using var fe = server.Connect();
        fe.Negotiate(packed: packed);
        if (inflight)
        {
            var (fd, d) = fe.GetInflightFd(2, 256);
            using (fd)
                fe.SetInflightFd(fd, d);
        }
        fe.SetMemTable();
        var q = fe.SetupQueue(0, packed: packed);
        var buffer = new byte[4096];
        for (var i = 0; i < 2000; i++) // warm up: tiered compilation, first-call stubs
            q.Request(Type(i), (ulong)(i % 64) * 8, Type(i) == BlkRequestType.Flush ? [] : buffer);
        const int N = 20_000;
        // The count is process-wide, so a stray allocation elsewhere in the test process adds to a
        // run; it never subtracts. A real per-request allocation shows in every run, so the least
        // of three runs measures the back-end and not its neighbours.
        var perRequest = double.MaxValue;
        for (var run = 0; run < 3; run++)
        {
            var before = GC.GetTotalAllocatedBytes(precise: true);
            var mine = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < N; i++)
                q.Request(Type(i), (ulong)(i % 64) * 8, Type(i) == BlkRequestType.Flush ? [] : buffer);
            mine = GC.GetAllocatedBytesForCurrentThread() - mine;
            // Everything allocated outside this (the front-end's) thread: the server's threads.
            perRequest = Math.Min(perRequest, (double)(GC.GetTotalAllocatedBytes(precise: true) - before - mine) / N);
        }
        // Anything allocated per request or per kick would show as at least 24 bytes.
        Assert.True(perRequest < 1, $"the back-end allocated {perRequest:F2} bytes per request");
        if (disk == "file")
            Assert.True(server.Device.Stats.AsyncCompleted > N, "the reads did not go through io_uring");
    }

    private static BlkRequestType Type(int i) => (i % 64) switch
    {
        63 => BlkRequestType.Flush,
        _ when i % 2 == 0 => BlkRequestType.Out,
        _ => BlkRequestType.In,
    };
}
