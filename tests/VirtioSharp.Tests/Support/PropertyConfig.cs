using FsCheck;
using Microsoft.FSharp.Core;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// FsCheck settings shared by the property tests: a fixed seed so CI runs are reproducible, and
/// a modest number of cases. VBLK_PROPERTY_TESTS=N runs N cases instead; VBLK_PROPERTY_SEED=S
/// starts from another seed.
/// </summary>
public static class PropertyConfig
{
    public const ulong DefaultSeed = 0x5649_5254_494f_0001;

    public static Config For(int defaultCases)
    {
        var cases = int.TryParse(Environment.GetEnvironmentVariable("VBLK_PROPERTY_TESTS"), out var n) && n > 0 ? n : defaultCases;
        var seed = ulong.TryParse(Environment.GetEnvironmentVariable("VBLK_PROPERTY_SEED"), out var s) ? s : DefaultSeed;
        return Config.QuickThrowOnFailure
            .WithMaxTest(cases)
            .WithQuietOnSuccess(true)
            .WithReplay(FSharpOption<Replay>.Some(new Replay(new Rnd(seed), FSharpOption<int>.None)));
    }
}
