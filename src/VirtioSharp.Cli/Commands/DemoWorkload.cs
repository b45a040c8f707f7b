using VirtioSharp.Block;
using VirtioSharp.Devices;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// The demo's workload: write a seeded pattern over the disk with many requests in flight, read it
/// all back and compare every byte, flush, discard the last quarter, write zeroes over a range
/// and check it reads zeroes, read the device id.
/// </summary>
public sealed class DemoWorkload(BlkDriver driver, int depth, int blockSize, ulong seed)
{
    public sealed record Result(long Requests, long Bytes, long VerifiedBytes, long Mismatches, long FirstMismatch, bool ZeroesOk, string DeviceId, long Failures);

    private long _requests, _bytes, _mismatches, _firstMismatch = -1, _verified, _failures;

    public async Task<Result> RunAsync(CancellationToken cancel)
    {
        var capacity = (long)driver.Capacity;
        var blocks = capacity / blockSize;
        using var progress = new Progress("workload", blocks * 2);

        await Parallel(blocks, async (block, buffer) =>
        {
            Pattern.Fill(buffer, seed, block * blockSize);
            await driver.WriteAsync((ulong)(block * blockSize), buffer, cancel);
            progress.Advance();
        }, cancel);
        await driver.FlushAsync(cancel);
        Interlocked.Increment(ref _requests);

        await Parallel(blocks, async (block, buffer) =>
        {
            await driver.ReadAsync((ulong)(block * blockSize), buffer, cancel);
            var bad = Pattern.FirstMismatch(buffer, seed, block * blockSize);
            if (bad >= 0)
            {
                Interlocked.Increment(ref _mismatches);
                Interlocked.CompareExchange(ref _firstMismatch, block * blockSize + bad, -1);
            }
            Interlocked.Add(ref _verified, buffer.Length);
            progress.Advance();
        }, cancel);
        progress.Done();

        var zeroesOk = true;
        if (!driver.ReadOnly && VirtioFeatures.Has(driver.Features, BlkFeatures.Discard))
        {
            var quarter = (ulong)(blocks / 4 * blockSize);
            await driver.DiscardAsync((ulong)capacity - quarter, quarter, cancel);
            Interlocked.Increment(ref _requests);
        }
        if (!driver.ReadOnly && VirtioFeatures.Has(driver.Features, BlkFeatures.WriteZeroes))
        {
            var length = (ulong)Math.Min(blockSize * 4L, capacity / 2);
            await driver.WriteZeroesAsync((ulong)blockSize, length, cancel: cancel);
            var back = new byte[length];
            await driver.ReadAsync((ulong)blockSize, back, cancel);
            zeroesOk = Array.TrueForAll(back, b => b == 0);
            _requests += 2;
        }
        var id = await driver.GetIdAsync(cancel);
        Interlocked.Increment(ref _requests);
        return new Result(_requests, _bytes, _verified, _mismatches, _firstMismatch, zeroesOk, id, _failures);
    }

    /// <summary>Runs <paramref name="work"/> over every block with <c>depth</c> requests in flight.</summary>
    private async Task Parallel(long blocks, Func<long, byte[], Task> work, CancellationToken cancel)
    {
        long next = -1;
        var workers = new Task[Math.Min(depth, (int)Math.Max(1, blocks))];
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                var buffer = new byte[blockSize];
                long block;
                while ((block = Interlocked.Increment(ref next)) < blocks)
                {
                    cancel.ThrowIfCancellationRequested();
                    try
                    {
                        await work(block, buffer);
                    }
                    catch (BlkException)
                    {
                        Interlocked.Increment(ref _failures);
                    }
                    Interlocked.Increment(ref _requests);
                    Interlocked.Add(ref _bytes, blockSize);
                }
            }, cancel);
        }
        await Task.WhenAll(workers);
    }
}

/// <summary>A seeded pattern that differs at every 8-byte word of the disk, so misplaced data is caught.</summary>
public static class Pattern
{
    public static ulong Word(ulong seed, long offset)
    {
        var x = seed ^ (ulong)offset * 0x9E3779B97F4A7C15UL;
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9UL;
        return x ^ (x >> 29);
    }

    public static void Fill(Span<byte> buffer, ulong seed, long offset)
    {
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(buffer);
        for (var i = 0; i < words.Length; i++)
            words[i] = Word(seed, offset + i * 8);
    }

    /// <summary>Offset of the first wrong byte inside <paramref name="buffer"/>, or -1.</summary>
    public static long FirstMismatch(ReadOnlySpan<byte> buffer, ulong seed, long offset)
    {
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(buffer);
        for (var i = 0; i < words.Length; i++)
        {
            if (words[i] != Word(seed, offset + i * 8))
                return i * 8;
        }
        return -1;
    }
}

/// <summary>A progress line on standard error, redrawn at most ten times a second when it is a terminal.</summary>
public sealed class Progress(string label, long total) : IDisposable
{
    private readonly bool _tty = !Console.IsErrorRedirected;
    private long _done;
    private long _lastDraw;
    private bool _finished;

    public void Advance()
    {
        var done = Interlocked.Increment(ref _done);
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _lastDraw);
        if (_tty && now - last >= 100 && Interlocked.CompareExchange(ref _lastDraw, now, last) == last)
            Console.Error.Write($"\r{label}: {done * 100 / Math.Max(total, 1),3}% ({done}/{total})");
    }

    public void Done()
    {
        if (_tty && !_finished)
            Console.Error.Write($"\r{label}: 100% ({total}/{total})\n");
        _finished = true;
    }

    public void Dispose() => Done();
}
