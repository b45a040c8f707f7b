using System.CommandLine;
using VirtioSharp.Cli.Commands;

var root = new RootCommand("vblk: a virtio block device stack");
root.Add(ServeCommand.Create());
return root.Parse(args).Invoke();
