using VirtioSharp.Memory;
using VirtioSharp.Native;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>The small io_uring the queue workers use: vectored reads of a file, fdatasync, multishot polls, a full queue.</summary>
public sealed unsafe class IoUringTests
{
    private static IoUring NewRing(uint entries = 8) =>
        IoUring.TryCreate(entries, out var why) ?? throw new InvalidOperationException($"io_uring is unavailable: {why}");

    private static IoUring.Cqe Next(IoUring ring)
    {
        IoUring.Cqe cqe;
        while (!ring.TryTakeCompletion(out cqe))
            ring.SubmitAndWait(wait: true);
        return cqe;
    }

    [Fact]
    public void A_vectored_read_and_an_fdatasync_complete_with_their_results()
    {
        using var dir = new TempDir();
        var path = dir.File("f");
        var onDisk = new byte[8192];
        new Random(1).NextBytes(onDisk);
        File.WriteAllBytes(path, onDisk);
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var fd = (int)file.DangerousGetHandle();
        using var ring = NewRing();

        var a = new byte[1000];
        var b = new byte[3096];
        fixed (byte* pa = a, pb = b)
        {
            var iov = stackalloc IoVec[2] { new((nint)pa, 1000), new((nint)pb, 3096) };
            Assert.True(ring.QueueReadV(fd, iov, 2, 512, 78));
            Assert.True(ring.QueueFDataSync(fd, 79));
            var results = new Dictionary<ulong, int>();
            for (var i = 0; i < 2; i++)
            {
                var cqe = Next(ring);
                results[cqe.UserData] = cqe.Result;
            }
            Assert.Equal(4096, results[78]);
            Assert.Equal(0, results[79]);
        }
        Assert.Equal(onDisk[512..1512], a);
        Assert.Equal(onDisk[1512..4608], b);
    }

    [Fact]
    public void A_read_past_the_end_of_the_file_is_short_and_an_error_is_a_negative_errno()
    {
        using var dir = new TempDir();
        var path = dir.File("f");
        File.WriteAllBytes(path, new byte[1024]);
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        using var ring = NewRing();
        var buffer = new byte[4096];
        fixed (byte* p = buffer)
        {
            var iov = new IoVec((nint)p, 4096);
            Assert.True(ring.QueueReadV((int)file.DangerousGetHandle(), &iov, 1, 512, 1));
            Assert.Equal(512, Next(ring).Result);
            Assert.True(ring.QueueReadV(-1, &iov, 1, 0, 2));
            Assert.Equal(-9, Next(ring).Result); // EBADF
        }
    }

    [Fact]
    public void A_multishot_poll_reports_every_signal_and_stays_armed()
    {
        using var ring = NewRing();
        using var ev = EventFd.Create();
        Assert.True(ring.QueuePollMultishot(ev.Fd, 5));
        ring.SubmitAndWait(wait: false);
        for (var i = 0; i < 3; i++)
        {
            ev.Signal();
            var cqe = Next(ring);
            Assert.Equal(5UL, cqe.UserData);
            Assert.True(cqe.Result > 0);
            Assert.NotEqual(0u, cqe.Flags & IoUring.CqeFlagMore);
            Assert.True(ev.TryRead(out _));
        }
    }

    [Fact]
    public void A_full_submission_queue_refuses_until_it_is_submitted()
    {
        using var ring = NewRing(4);
        using var ev = EventFd.Create();
        var queued = 0;
        while (ring.QueueFDataSync(ev.Fd, (ulong)queued))
            queued++;
        Assert.Equal(4, queued);
        ring.SubmitAndWait(wait: false); // the kernel takes them; their completions come later
        Assert.True(ring.QueueFDataSync(ev.Fd, 99));
        var seen = 0;
        while (seen < 5)
        {
            Next(ring);
            seen++;
        }
    }

    [Fact]
    public void An_eventfd_signal_goes_with_the_submission_and_posts_no_completion_when_it_succeeds()
    {
        using var ring = NewRing();
        Assert.True(ring.SkipsSuccessCompletions, "this kernel's io_uring cannot skip completions (Linux 5.17)");
        using var ev = EventFd.Create();
        Assert.True(ring.QueueEventFdSignal(ev.Fd, 7));
        Assert.True(ring.QueuePollMultishot(ev.Fd, 5)); // armed after the write: readable at once
        Assert.Equal(2u, ring.Unsubmitted);
        var cqe = Next(ring);
        Assert.Equal(0u, ring.Unsubmitted);
        Assert.Equal(5UL, cqe.UserData);
        Assert.False(ring.TryTakeCompletion(out var extra), $"a completion for {extra.UserData}");
        Assert.True(ev.TryRead(out var value));
        Assert.Equal(1UL, value);
    }

    [Fact]
    public void A_failing_eventfd_signal_posts_its_completion_with_the_error()
    {
        using var dir = new TempDir();
        var path = dir.File("f");
        File.WriteAllBytes(path, new byte[8]);
        using var readOnly = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        using var ring = NewRing();
        Assert.True(ring.QueueEventFdSignal((int)readOnly.DangerousGetHandle(), 7));
        var cqe = Next(ring);
        Assert.Equal(7UL, cqe.UserData);
        Assert.Equal(-9, cqe.Result); // EBADF: not open for writing
    }
}
