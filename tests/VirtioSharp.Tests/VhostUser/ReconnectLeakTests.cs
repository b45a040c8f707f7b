using System.Diagnostics;
using VirtioSharp.Block;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A front-end that connects, sets up memory and a running ring, serves a request and leaves, a
/// thousand times in a row, leaves the back-end with no more descriptors and mappings than
/// before. Runs alone: it counts the whole process's descriptors and mappings.
/// </summary>
[Collection(nameof(AllocationTests))]
public sealed class ReconnectLeakTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static int OpenFds() => Directory.GetFiles("/proc/self/fd").Length;
    private static int Mappings() => File.ReadAllLines("/proc/self/maps").Length;

    [Fact]
    public void A_thousand_reconnects_leak_no_descriptor_and_no_mapping()
    {
        using var dir = new TempDir();
        FileBackend.Create(dir.File("disk.img"), TestServer.DiskSize);
        using var server = new TestServer(numQueues: 1, backend: FileBackend.Open(dir.File("disk.img")));
        var data = new byte[4096];

        void Session(int i)
        {
            using (var f = server.Connect())
            {
                f.Negotiate();
                f.SetMemTable();
                var q = f.SetupQueue(0);
                Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.In, (ulong)(i % 64), data)); // a read through the worker's io_uring
            }
            TestServer.Eventually(() => server.Server.SessionsEnded == i + 1, "the back-end to end the session");
        }

        for (var i = 0; i < 20; i++)
            Session(i); // warm-up: thread pool, GC heaps, the io_uring probe
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var (fds, maps) = (OpenFds(), Mappings());
        var clock = Stopwatch.StartNew();
        for (var i = 20; i < 1020; i++)
            Session(i);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var (fdsAfter, mapsAfter) = (OpenFds(), Mappings());
        output.WriteLine($"descriptors {fds} -> {fdsAfter}, mappings {maps} -> {mapsAfter}, 1000 sessions in {clock.Elapsed.TotalSeconds:0.0} s");
        // One leaked descriptor or mapping per session would show as 1000; what is allowed is the
        // runtime's own slack (a GC heap segment, a thread-pool thread), not proportional to sessions.
        Assert.True(fdsAfter - fds < 10, $"descriptors {fds} -> {fdsAfter} after 1000 sessions ({clock.Elapsed.TotalSeconds:0.0} s)");
        Assert.True(mapsAfter - maps < 50, $"mappings {maps} -> {mapsAfter} after 1000 sessions");
        Assert.Equal(1020, server.Server.Connections);
    }
}
