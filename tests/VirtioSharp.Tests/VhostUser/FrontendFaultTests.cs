using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Driver;
using VirtioSharp.VhostUser;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A back-end that misbehaves must cost the caller a clear error within a bound: never a hang,
/// never a crash. Each test runs against <see cref="FakeBackend"/> with one fault.
/// </summary>
public sealed class FrontendFaultTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private static VhostUserFrontendOptions Options => new()
    {
        MemorySize = 4 << 20,
        ReplyTimeout = TimeSpan.FromMilliseconds(500),
        ProgressTimeout = TimeSpan.FromSeconds(1),
        DrainTimeout = TimeSpan.FromSeconds(1),
    };

    private static BlkDriver Start(VhostUserFrontendTransport transport) =>
        BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = 16 });

    /// <summary>Runs <paramref name="action"/> and returns what it threw, failing if it takes longer than the bound.</summary>
    private static async Task<Exception> FailsWithin(Func<Task> action)
    {
        var task = action();
        var done = await Task.WhenAny(task, Task.Delay(Bound));
        Assert.True(done == task, $"no answer within {Bound.TotalSeconds} s");
        return await Assert.ThrowsAnyAsync<Exception>(() => task);
    }

    private static void DisposesWithin(IDisposable d)
    {
        var watch = Stopwatch.StartNew();
        d.Dispose();
        Assert.True(watch.Elapsed < Bound, $"dispose took {watch.Elapsed}");
    }

    [Fact]
    public void A_back_end_that_never_answers_fails_the_connect_with_a_timeout()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.NeverAnswer, dir);
        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<VhostUserException>(() => VhostUserFrontendTransport.Connect(fake.SocketPath, Options));
        Assert.Contains("did not answer VHOST_USER_GET_FEATURES", e.Message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void A_reply_cut_off_after_its_header_fails_the_connect_with_a_timeout()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.HeaderOnly, dir);
        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<VhostUserException>(() => VhostUserFrontendTransport.Connect(fake.SocketPath, Options));
        Assert.Contains("reading the reply to VHOST_USER_GET_FEATURES", e.Message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
    }

    [Fact]
    public void A_refused_feature_set_means_FEATURES_OK_does_not_stick()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.RefuseFeatures, dir);
        using var transport = VhostUserFrontendTransport.Connect(fake.SocketPath, Options);
        var e = Assert.Throws<VirtioDeviceException>(() => Start(transport));
        Assert.Contains("refused features", e.Message);
    }

    [Fact]
    public async Task A_socket_closed_mid_request_fails_the_request_and_later_ones()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.CloseOnKick, dir);
        var transport = VhostUserFrontendTransport.Connect(fake.SocketPath, Options);
        var driver = Start(transport);
        var e = await FailsWithin(() => driver.ReadAsync(0, new byte[4096]).AsTask());
        Assert.IsType<VirtioDeviceException>(e);
        Assert.Contains("closed the connection", e.Message);
        e = await FailsWithin(() => driver.WriteAsync(0, new byte[512]).AsTask());
        Assert.Contains("closed the connection", e.Message);
        Assert.NotNull(transport.Failure);
        DisposesWithin(driver);
        DisposesWithin(transport);
    }

    [Fact]
    public async Task A_used_id_that_was_never_submitted_fails_outstanding_requests()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.BogusUsedId, dir);
        var transport = VhostUserFrontendTransport.Connect(fake.SocketPath, Options);
        var driver = Start(transport);
        var e = await FailsWithin(() => driver.ReadAsync(0, new byte[4096]).AsTask());
        Assert.Contains("not an outstanding request", e.Message);
        Assert.NotNull(driver.Failure);
        DisposesWithin(driver);
        DisposesWithin(transport);
    }

    [Fact]
    public async Task A_used_length_larger_than_the_buffers_fails_the_request()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.OversizedUsedLength, dir);
        var transport = VhostUserFrontendTransport.Connect(fake.SocketPath, Options);
        var driver = Start(transport);
        var e = await FailsWithin(() => driver.ReadAsync(0, new byte[4096]).AsTask());
        Assert.IsType<BlkException>(e);
        Assert.Contains("writable bytes", e.Message);
        DisposesWithin(driver);
        DisposesWithin(transport);
    }

    [Fact]
    public async Task A_back_end_that_keeps_requests_forever_is_given_up_on()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.IgnoreRequests, dir);
        var transport = VhostUserFrontendTransport.Connect(fake.SocketPath, Options);
        var driver = Start(transport);
        var e = await FailsWithin(() => driver.FlushAsync().AsTask());
        Assert.Contains("made no progress", e.Message);
        DisposesWithin(driver);
        DisposesWithin(transport);
    }

    [Fact]
    public async Task A_back_end_silent_at_stop_does_not_hang_the_stop()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.SilentOnStop, dir);
        var transport = VhostUserFrontendTransport.Connect(fake.SocketPath, Options);
        var driver = Start(transport);
        await driver.WriteAsync(0, new byte[4096]); // a working back-end until the end
        DisposesWithin(driver);
        Assert.Contains("did not answer VHOST_USER_GET_VRING_BASE", transport.Failure);
        DisposesWithin(transport);
    }
}
