using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Backend;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>A vhost-user-blk back-end over a memory disk, on a fresh socket path, logging into a list.</summary>
internal sealed class TestServer : IDisposable
{
    public const ulong DiskSize = 8 << 20;

    public TestServer(int numQueues = 2, StrictMode strict = StrictMode.Off, IBlockBackend? backend = null, int queueSize = 256, AioMode aio = AioMode.Auto, TimeSpan? messageTimeout = null, int holdCompletionsMs = 0, int pollMicroseconds = 0, BlkLimits? limits = null)
    {
        SocketPath = Path.Combine(Path.GetTempPath(), $"vs-{Guid.NewGuid():N}.sock"[..24]);
        Backend = backend ?? new MemoryBackend(DiskSize);
        Device = new BlkDevice(Backend, new BlkDeviceOptions { NumQueues = numQueues, QueueSize = queueSize, Log = Log, Strict = strict, Limits = limits });
        Server = new VhostUserBlkServer(Device, SocketPath) { Aio = aio, MessageTimeout = messageTimeout ?? VhostUserBlkServer.DefaultMessageTimeout, HoldCompletionsMs = holdCompletionsMs, PollMicroseconds = pollMicroseconds };
        Server.Start();
    }

    public string SocketPath { get; }
    public ListLogSink Log { get; } = new();
    public IBlockBackend Backend { get; }
    public BlkDevice Device { get; }
    public VhostUserBlkServer Server { get; }

    public TestFrontEnd Connect() => TestFrontEnd.Connect(SocketPath);

    /// <summary>Waits until <paramref name="condition"/> holds (server threads run on their own).</summary>
    public static void Eventually(Func<bool> condition, string what)
    {
        var deadline = Environment.TickCount64 + TestFrontEnd.Timeout;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"timed out waiting for: {what}");
            Thread.Sleep(5);
        }
    }

    public void WaitForLog(string text) => Eventually(() => Log.Contains(text), $"log line containing '{text}'");

    public string Dump() => string.Join("\n", Log.Lines.Select(l => $"{l.Level}: {l.Message}"));

    public void Dispose()
    {
        Server.Dispose();
        Backend.Dispose();
    }
}
