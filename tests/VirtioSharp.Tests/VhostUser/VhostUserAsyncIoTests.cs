using System.IO.Pipes;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Memory;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Frontend;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// The back-end's queue workers with file I/O on io_uring (<see cref="AioMode"/>): many requests
/// of one queue in flight, completed in any order, and a ring that stops only once its requests
/// are done, so guest memory is never unmapped under an I/O.
/// </summary>
public sealed class VhostUserAsyncIoTests
{
    private const ulong DiskSize = 16 << 20;

    /// <summary>
    /// A disk whose reads are served from a pipe: a read stays in the kernel until the test writes
    /// the bytes, so a test can hold a request in flight as long as it likes.
    /// </summary>
    private sealed unsafe class PipeBackend : IAsyncBlockBackend
    {
        private readonly AnonymousPipeServerStream _writer = new(PipeDirection.Out);

        public ulong Capacity => DiskSize;
        public uint BlockSize => 512;
        public bool ReadOnly => true;
        public bool SupportsDiscard => false;
        public bool SupportsWriteZeroes => false;
        public string Description => "pipe";
        private int Fd => (int)_writer.ClientSafePipeHandle.DangerousGetHandle();

        public bool TryStart(in BlkIo op, IQueueIo io) =>
            op.Kind == BlkIoKind.Read && io.TryStartRead(Fd, op.Iov, op.IovCount, op.Offset, op.Tag);

        public void Feed(byte[] bytes)
        {
            _writer.Write(bytes);
            _writer.Flush();
        }

        public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => false;
        public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => false;
        public bool Flush() => true;
        public bool Discard(ulong offset, ulong length) => false;
        public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) => false;
        public void Dispose() => _writer.Dispose();
    }

    [Fact]
    public async Task GET_VRING_BASE_answers_only_after_the_read_in_flight_is_done_and_used()
    {
        using var pipe = new PipeBackend();
        using var server = new TestServer(numQueues: 1, backend: pipe);
        using var f = server.Connect();
        f.Negotiate();
        f.SetMemTable();
        var q = f.SetupQueue(0);

        var head = PostRead(f, q, 512);
        TestServer.Eventually(() => server.Device.QueueIoInFlight(0) == 1, "the read to be in flight");

        var stop = Task.Run(() => f.GetVringBase(0));
        Assert.NotSame(stop, await Task.WhenAny(stop, Task.Delay(300))); // no answer with a read still in flight
        Assert.Equal(0xff, f.Memory.GetSpan(q.Status, 1)[0]);

        var bytes = new byte[512];
        new Random(5).NextBytes(bytes);
        pipe.Feed(bytes);
        var next = await stop.WaitAsync(TimeSpan.FromMilliseconds(TestFrontEnd.Timeout));
        Assert.Equal(1, next); // the next request to take is the one after ours
        Assert.Equal(513u, q.WaitUsed(head));
        Assert.Equal((byte)BlkStatus.Ok, f.Memory.GetSpan(q.Status, 1)[0]);
        Assert.Equal(bytes, f.Memory.GetSpan(q.Data, 512).ToArray());
        Assert.Equal(1, server.Device.Stats.AsyncCompleted);
    }

    [Fact]
    public void A_front_end_that_leaves_with_a_read_in_flight_is_cleaned_up_after_it_and_the_next_one_is_served()
    {
        using var pipe = new PipeBackend();
        using var server = new TestServer(numQueues: 1, backend: pipe);
        using (var f = server.Connect())
        {
            f.Negotiate();
            f.SetMemTable();
            var q = f.SetupQueue(0);
            PostRead(f, q, 4096);
            TestServer.Eventually(() => server.Device.QueueIoInFlight(0) == 1, "the read to be in flight");
        }
        // The connection is gone but its memory stays mapped until the read lands.
        Thread.Sleep(200);
        Assert.True(server.Server.IsConnected);
        pipe.Feed(new byte[4096]);
        TestServer.Eventually(() => !server.Server.IsConnected, "the session to end");
        Assert.Equal(0, server.Device.QueueIoInFlight(0));

        using var next = server.Connect();
        Assert.NotEqual(0UL, next.Negotiate());
        Assert.Equal(2, server.Server.Connections);
    }

    [Theory]
    [InlineData(AioMode.Auto)]
    [InlineData(AioMode.Sync)]
    public async Task GET_VRING_BASE_waits_for_an_asynchronous_backend_that_completes_on_its_own_thread(AioMode aio)
    {
        var backend = new ThreadedBackend(DiskSize);
        new Random(9).NextBytes(backend.Disk.Contents(0, 4096));
        using var server = new TestServer(numQueues: 1, backend: backend, aio: aio);
        using var f = server.Connect();
        f.Negotiate();
        f.SetMemTable();
        var q = f.SetupQueue(0);

        var head = PostRead(f, q, 4096);
        TestServer.Eventually(() => server.Device.QueueIoInFlight(0) == 1, "the read to be in flight");
        var stop = Task.Run(() => f.GetVringBase(0));
        Assert.NotSame(stop, await Task.WhenAny(stop, Task.Delay(300))); // no answer with a read still in flight
        Assert.Equal(0xff, f.Memory.GetSpan(q.Status, 1)[0]);

        backend.Release(0); // the storage client's thread posts; the worker finishes the request
        Assert.Equal(1, await stop.WaitAsync(TimeSpan.FromMilliseconds(TestFrontEnd.Timeout)));
        Assert.Equal(4097u, q.WaitUsed(head));
        Assert.Equal((byte)BlkStatus.Ok, f.Memory.GetSpan(q.Status, 1)[0]);
        Assert.Equal(backend.Disk.Contents(0, 4096).ToArray(), f.Memory.GetSpan(q.Data, 4096).ToArray());
        Assert.Equal(0, server.Device.QueueIoInFlight(0));
    }

    [Theory]
    [InlineData(AioMode.Auto)]
    [InlineData(AioMode.Sync)]
    public async Task An_asynchronous_backend_completing_on_pool_threads_in_any_order_reads_back_byte_for_byte(AioMode aio)
    {
        const int chunk = 16384, count = 256;
        var backend = new ThreadedBackend(DiskSize, hold: false);
        var model = new byte[DiskSize];
        var rng = new Random(17);
        var device = new BlkDevice(backend, new BlkDeviceOptions { NumQueues = 2, QueueSize = 128 });
        using var dir = new TempDir();
        var socket = dir.File("s.sock");
        using (var server = new VhostUserBlkServer(device, socket) { Aio = aio })
        {
            server.Start();
            using var transport = VhostUserFrontendTransport.Connect(socket, new VhostUserFrontendOptions { MemorySize = 32 << 20 });
            using var driver = BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = 128, NumQueues = 2 });
            var writes = new List<Task>();
            for (var i = 0; i < count; i++)
            {
                var data = new byte[rng.Next(1, chunk / 512 + 1) * 512];
                rng.NextBytes(data);
                data.CopyTo(model.AsSpan(i * chunk));
                writes.Add(driver.WriteAsync((ulong)(i * chunk), data).AsTask());
            }
            await Task.WhenAll(writes);
            await driver.FlushAsync();
            var reads = new List<Task>();
            for (var i = 0; i < count; i++)
                reads.Add(Verify(driver, (ulong)(i * chunk), model.AsMemory(i * chunk, chunk)));
            await Task.WhenAll(reads);
        }
        Assert.Equal(model, backend.Disk.Contents(0, (int)DiskSize).ToArray());
        Assert.True(device.Stats.AsyncCompleted >= 2 * count, $"only {device.Stats.AsyncCompleted} requests went through the backend asynchronously");
        Assert.Equal(0, backend.SyncCalls);
        backend.Dispose();
    }

    /// <summary>Makes a read of sector 0 available and kicks; returns its head.</summary>
    private static ushort PostRead(TestFrontEnd f, TestQueue q, uint length)
    {
        new BlkRequestHeader((uint)BlkRequestType.In, 0, 0).Write(f.Memory.GetSpan(q.Header, 16));
        f.Memory.GetSpan(q.Status, 1)[0] = 0xff;
        Span<DriverBuffer> chain = [new(q.Header, 16, false), new(q.Data, length, true), new(q.Status, 1, true)];
        Assert.True(q.Driver.TryAdd(chain, out var head));
        q.Driver.Publish();
        q.Kick.Signal();
        return head;
    }

    [Theory]
    [InlineData(AioMode.Auto)]
    [InlineData(AioMode.Sync)]
    public async Task Many_requests_in_flight_on_a_file_read_and_write_it_byte_for_byte(AioMode aio)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, DiskSize);
        var model = new byte[DiskSize];
        var rng = new Random(31);
        using var backend = FileBackend.Open(image);
        var device = new BlkDevice(backend, new BlkDeviceOptions { NumQueues = 2, QueueSize = 128 });
        var socket = dir.File("s.sock");
        using (var server = new VhostUserBlkServer(device, socket) { Aio = aio })
        {
            server.Start();
            using var transport = VhostUserFrontendTransport.Connect(socket, new VhostUserFrontendOptions { MemorySize = 32 << 20 });
            using var driver = BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = 128, NumQueues = 2 });
            for (var round = 0; round < 4; round++)
            {
                var writes = new List<Task>();
                for (var i = 0; i < 96; i++)
                {
                    var length = rng.Next(1, 33) * 512;
                    var offset = (ulong)(round * 96 + i) * 16384; // disjoint: requests in flight may finish in any order
                    var data = new byte[length];
                    rng.NextBytes(data);
                    data.CopyTo(model.AsSpan((int)offset));
                    writes.Add(driver.WriteAsync(offset, data).AsTask());
                }
                await Task.WhenAll(writes);
                await driver.FlushAsync();
            }
            var reads = new List<Task>();
            for (var i = 0; i < 384; i++)
            {
                var offset = (ulong)i * 16384;
                reads.Add(Verify(driver, offset, model.AsMemory((int)offset, 16384)));
            }
            await Task.WhenAll(reads);
        }
        Assert.Equal(model, File.ReadAllBytes(image));
        if (aio == AioMode.Sync)
            Assert.Equal(0, device.Stats.AsyncCompleted);
        else
            Assert.Equal(device.Stats.Requests(BlkRequestType.In) + device.Stats.Requests(BlkRequestType.Flush), device.Stats.AsyncCompleted);
    }

    private static async Task Verify(BlkDriver driver, ulong offset, ReadOnlyMemory<byte> expected)
    {
        var got = new byte[expected.Length];
        await driver.ReadAsync(offset, got);
        Assert.True(expected.Span.SequenceEqual(got), $"data at {offset} differs");
    }
}
