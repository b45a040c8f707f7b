using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.Tests.Conformance;

/// <summary>How the device answers the offending request.</summary>
internal enum Reply
{
    /// <summary>Head returned, status byte written (<see cref="Expect.Status"/>), used len <see cref="Expect.UsedLength"/>.</summary>
    Status,
    /// <summary>No status byte can be trusted to exist: head returned with len 0, nothing written.</summary>
    NoStatus,
    /// <summary>The ring itself is broken: nothing returned, DEVICE_NEEDS_RESET in every mode.</summary>
    RingCorrupt,
}

/// <summary>What happens to the driver's initialization after a register-level breach.</summary>
internal enum After
{
    /// <summary>The device goes on and serves requests (unless strict=fail).</summary>
    CarriesOn,
    /// <summary>The device refused the step (e.g. FEATURES_OK does not stick); the driver must reset.</summary>
    Refused,
    /// <summary>DEVICE_NEEDS_RESET in every mode.</summary>
    NeedsReset,
}

/// <summary>The diagnosis a breach must produce: its spec section and key words of the one-line report.</summary>
internal sealed record Expect(string Section, params string[] Words)
{
    /// <summary>Checked only with --strict: the device can serve the request, so off mode says nothing.</summary>
    public bool StrictOnly { get; init; }
    public Reply Reply { get; init; } = Reply.Status;
    public BlkStatus Status { get; init; } = BlkStatus.IoErr;
    public uint UsedLength { get; init; } = 1;
    /// <summary>Queue the breach names (-1: the device as a whole).</summary>
    public int Queue { get; init; }
}

/// <summary>
/// Runs one breach three times, with strict off, warn and fail, each on a fresh device, and
/// checks the diagnosis and the device's answer:
/// <list type="bullet">
/// <item>warn and fail report the breach once as one line: section, queue, descriptor, expected, found;
/// off reports it too unless it is a strict-only rule;</item>
/// <item>the offending request gets the same answer (status byte, used len) in every mode: strict
/// never changes what the device does, only what it says and whether it stops;</item>
/// <item>warn and off carry on where the spec allows (a correct request is served next);
/// fail sets DEVICE_NEEDS_RESET with a configuration change interrupt and serves nothing more;</item>
/// <item>a reset prints the summary by section, clears it, and the device serves again.</item>
/// </list>
/// </summary>
internal static class BreachCheck
{
    public static readonly StrictMode[] Modes = [StrictMode.Off, StrictMode.Warn, StrictMode.Fail];

    /// <summary>A breach in the rings or in a request; the driver initialized the device correctly first.</summary>
    public static void Ring(Expect e, Func<HandDriver, Submitted> commit, ulong? features = null,
        Func<BlkDeviceOptions, BlkDeviceOptions>? options = null, bool readOnly = false, int queueSize = 16)
    {
        foreach (var mode in Modes)
        {
            using var d = new HandDriver(mode, options, readOnly);
            d.Init(features, queueSize);
            var usedBefore = d.UsedIdx;
            var s = commit(d);
            if (s.UsedBefore >= 0)
                usedBefore = (ushort)s.UsedBefore;
            var reported = AssertDiagnosis(d, mode, e, s.Descriptor);

            switch (e.Reply)
            {
                case Reply.Status:
                    Assert.True(d.UsedIdx == (ushort)(usedBefore + 1), $"{mode}: the head did not come back\n{d.Dump()}");
                    Assert.Equal((uint)s.Head, d.Used(usedBefore).Id);
                    Assert.Equal(e.UsedLength, d.Used(usedBefore).Length);
                    Assert.Equal((byte)e.Status, d.At(s.StatusAddress));
                    break;
                case Reply.NoStatus:
                    Assert.True(d.UsedIdx == (ushort)(usedBefore + 1), $"{mode}: the head did not come back\n{d.Dump()}");
                    Assert.Equal((uint)s.Head, d.Used(usedBefore).Id);
                    Assert.Equal(0u, d.Used(usedBefore).Length);
                    Assert.Equal(0xff, d.At(s.StatusAddress));
                    break;
                case Reply.RingCorrupt:
                    Assert.Equal(usedBefore, d.UsedIdx);
                    break;
            }

            var stops = e.Reply == Reply.RingCorrupt || (mode == StrictMode.Fail && reported);
            AssertStopsOrCarriesOn(d, mode, stops);
            AssertResetStartsAfresh(d, e, reported, () => d.Init(features, queueSize));
        }
    }

    /// <summary>
    /// A breach of the initialization or register rules. <paramref name="commit"/> drives the
    /// registers itself, misstep included, and finishes initialization when the device lets it.
    /// </summary>
    public static void Init(Expect e, Action<HandDriver> commit, After after = After.CarriesOn, Action<HandDriver>? answer = null)
    {
        foreach (var mode in Modes)
        {
            using var d = new HandDriver(mode);
            commit(d);
            var reported = AssertDiagnosis(d, mode, e, -1);
            answer?.Invoke(d);
            switch (after)
            {
                case After.NeedsReset:
                    AssertStopsOrCarriesOn(d, mode, stops: true);
                    break;
                case After.Refused:
                    Assert.Equal(mode == StrictMode.Fail && reported, d.NeedsReset);
                    break;
                default:
                    AssertStopsOrCarriesOn(d, mode, stops: mode == StrictMode.Fail && reported);
                    break;
            }
            AssertResetStartsAfresh(d, e, reported, () => d.Init());
        }
    }

    /// <summary>Checks the report; returns whether this mode reports the breach at all.</summary>
    private static bool AssertDiagnosis(HandDriver d, StrictMode mode, Expect e, int descriptor)
    {
        var reported = mode != StrictMode.Off || !e.StrictOnly;
        var breach = d.Breaches.Breaches.FirstOrDefault(b => b.Section == e.Section
            && e.Words.All(w => b.ToString().Contains(w, StringComparison.Ordinal)));
        if (!reported)
        {
            Assert.True(breach is null, $"{mode}: a strict-only rule was reported without --strict: {breach}");
            Assert.False(d.Log.Contains($"spec {e.Section}:"), $"{mode}: logged without --strict\n{d.Dump()}");
            return false;
        }
        Assert.True(breach is not null, $"{mode}: no breach of {e.Section} with '{string.Join("', '", e.Words)}' was reported\n{d.Dump()}");
        var line = breach.ToString();
        Assert.Equal(e.Queue, breach.Queue);
        if (e.Queue >= 0 && descriptor != Submitted.AnyDescriptor)
            Assert.Equal(descriptor, breach.Descriptor);
        Assert.True(d.Log.Contains($"driver breach: {line}"), $"{mode}: the breach was not logged as one line\n{d.Dump()}");
        // With strict=fail the device stops at the first breach: nothing after it is judged.
        if (mode == StrictMode.Fail)
            Assert.Equal(e.Section, d.Breaches.Breaches[0].Section);
        return true;
    }

    private static void AssertStopsOrCarriesOn(HandDriver d, StrictMode mode, bool stops)
    {
        if (stops)
        {
            Assert.True(d.NeedsReset, $"{mode}: DEVICE_NEEDS_RESET is not set\n{d.Dump()}");
            Assert.True(d.ConfigChangeInterrupt, $"{mode}: no configuration change interrupt with DEVICE_NEEDS_RESET");
            if ((d.Status & DeviceStatus.DriverOk) != 0)
                Assert.False(d.GoodRequestServed(), $"{mode}: the device went on serving after DEVICE_NEEDS_RESET");
        }
        else
        {
            Assert.False(d.NeedsReset, $"{mode}: DEVICE_NEEDS_RESET is set\n{d.Dump()}");
            Assert.True(d.GoodRequestServed(), $"{mode}: the device did not carry on\n{d.Dump()}");
        }
    }

    private static void AssertResetStartsAfresh(HandDriver d, Expect e, bool reported, Action init)
    {
        d.Reset();
        if (reported)
        {
            Assert.Contains(d.Log.Lines, l => l.Message.StartsWith("driver breaches: ", StringComparison.Ordinal)
                && l.Message.Contains($"{e.Section} x", StringComparison.Ordinal));
        }
        Assert.Equal(0, d.Breaches.Total);
        Assert.False(d.NeedsReset);
        init();
        Assert.True(d.GoodRequestServed(), $"the device did not serve after a reset\n{d.Dump()}");
    }
}
