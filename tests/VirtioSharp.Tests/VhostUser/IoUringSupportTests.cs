using VirtioSharp.Native;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// The io_uring probe run before any queue worker starts, and the choice it feeds: a kernel that
/// lacks something the worker uses (multishot poll before Linux 5.13) sends it to poll(2) and
/// synchronous I/O instead of letting it re-arm a poll that ends at once, for ever.
/// </summary>
public sealed class IoUringSupportTests
{
    private static readonly IoUringSupport Full = new(Ring: true, ReadV: true, FSync: true, PollAdd: true, MultishotPoll: true);

    [Fact]
    public void This_kernel_has_everything_the_worker_uses()
    {
        var probed = IoUringSupport.ProbeNow();
        Assert.True(probed.Complete, probed.Missing);
        Assert.Equal(Full, probed);
        Assert.Same(IoUringSupport.Probed, IoUringSupport.Probed); // probed once per process
    }

    [Fact]
    public void Without_multishot_poll_auto_falls_back_to_the_synchronous_worker()
    {
        var old = Full with { MultishotPoll = false };
        Assert.False(AioChoice.UseIoUring(AioMode.Auto, deviceDoesQueueIo: true, old, out var why));
        Assert.Contains("multishot poll", why);
        Assert.Contains("5.13", why);
    }

    [Fact]
    public void Without_multishot_poll_io_uring_mode_is_refused_naming_what_is_missing()
    {
        var e = Assert.Throws<InvalidOperationException>(() => AioChoice.UseIoUring(AioMode.IoUring, true, Full with { MultishotPoll = false }, out _));
        Assert.Contains("5.13", e.Message);
    }

    [Theory]
    [InlineData(false, true, true, true, "cannot be set up")]
    [InlineData(true, false, true, true, "IORING_OP_READV")]
    [InlineData(true, true, false, true, "IORING_OP_FSYNC")]
    [InlineData(true, true, true, false, "IORING_OP_POLL_ADD")]
    public void Each_missing_piece_is_named_and_sends_auto_to_the_synchronous_worker(bool ring, bool readV, bool fsync, bool pollAdd, string named)
    {
        var support = new IoUringSupport(ring, readV, fsync, pollAdd, MultishotPoll: true);
        Assert.False(AioChoice.UseIoUring(AioMode.Auto, true, support, out var why));
        Assert.Contains(named, why);
    }

    [Fact]
    public void A_complete_kernel_uses_io_uring_unless_told_not_to_or_the_device_does_no_file_io()
    {
        Assert.True(AioChoice.UseIoUring(AioMode.Auto, true, Full, out var why));
        Assert.Null(why);
        Assert.True(AioChoice.UseIoUring(AioMode.IoUring, true, Full, out _));
        Assert.False(AioChoice.UseIoUring(AioMode.Sync, true, Full, out why));
        Assert.Null(why);
        Assert.False(AioChoice.UseIoUring(AioMode.Auto, deviceDoesQueueIo: false, Full, out why));
        Assert.Null(why);
    }
}
