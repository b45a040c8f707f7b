using System.Text.RegularExpressions;
using VirtioSharp.Block;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// Our front-end and our back-end both polling their rings: requests flow with the kick and
/// call eventfds nearly silent (notifications and interrupts suppressed while each side looks,
/// 2.7.7 and 2.7.10), and every byte still arrives.
/// </summary>
public sealed partial class PollingTests
{
    [GeneratedRegex(@"queue 0: stopped at .*\((\d+) kicks, (\d+) calls so far\)")]
    private static partial Regex StoppedLine();

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public async Task Both_sides_polling_exchange_requests_with_almost_no_kick_or_call(int depth)
    {
        const int Requests = 2000;
        // Windows far longer than a request takes, even on a loaded host: neither side sleeps.
        using var server = new TestServer(numQueues: 1, pollMicroseconds: 1_000_000);
        var transport = VhostUserFrontendTransport.Connect(server.SocketPath, new VhostUserFrontendOptions { MemorySize = 16 << 20, PollMicroseconds = 1_000_000 });
        try
        {
            var driver = BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = 16, NumQueues = 1, InlineCompletions = true });
            var buffers = Enumerable.Range(0, depth).Select(_ => new byte[4096]).ToArray();
            var done = 0;
            async Task Worker(int w)
            {
                var buffer = buffers[w];
                int n;
                while ((n = Interlocked.Increment(ref done)) <= Requests)
                {
                    var offset = (ulong)(n % 512) * 4096;
                    if (n <= 512)
                    {
                        buffer.AsSpan().Fill((byte)n);
                        await driver.WriteAsync(offset, buffer);
                    }
                    else
                    {
                        await driver.ReadAsync(offset, buffer);
                        var expected = (byte)(n % 512 == 0 ? 512 : n % 512);
                        Assert.True(buffer.AsSpan().IndexOfAnyExcept(expected) < 0, $"block {n % 512} read back wrong");
                    }
                }
            }
            if (depth == 1)
                await Worker(0); // the writes are in order, so every block holds its last value
            else
            {
                // Writes first (all of them), then reads from several workers.
                for (var i = 1; i <= 512; i++)
                {
                    buffers[0].AsSpan().Fill((byte)i);
                    await driver.WriteAsync((ulong)(i % 512) * 4096, buffers[0]);
                }
                done = 512;
                await Task.WhenAll(Enumerable.Range(0, depth).Select(w => Task.Run(() => Worker(w))));
            }
            driver.Dispose(); // stops the ring: the back-end logs its kicks and calls
        }
        finally
        {
            transport.Dispose();
        }
        server.WaitForLog("queue 0: stopped at");
        var m = server.Log.Lines.Select(l => StoppedLine().Match(l.Message)).First(x => x.Success);
        var kicks = int.Parse(m.Groups[1].Value);
        var calls = int.Parse(m.Groups[2].Value);
        // Without suppression each request costs a call (and often a kick): about 2000 of them.
        Assert.True(kicks + calls < Requests / 20, $"{kicks} kicks and {calls} calls for {Requests} requests\n{server.Dump()}");
    }
}
